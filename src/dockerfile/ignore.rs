//! `.dockerignore` matching with Docker's own rules (not gitignore's).
