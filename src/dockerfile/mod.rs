//! Dockerfile front end: lexing, typed instructions with spans, word expansion, .dockerignore.
//!
//! (Skeleton: filled in by the module's owner; see DESIGN.md.)

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Message(String),
}

pub mod ignore;
