s/chmod 0440/chmod 0400/
