s/echo three > \/out/echo three, changed > \/out/
