s/marker 1/marker 2/
