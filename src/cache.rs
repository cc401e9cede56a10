//! Cache keys: the product's promise. A step's key is a sha256 over a canonical,
//! length-framed encoding of its parent key, expanded instruction, environment and inputs.
