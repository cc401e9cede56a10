//! Base images for tests, made from Debian packages and pushed to the harness registry.
