//! The RUN sandbox: namespaces, id maps, pivot_root, and the hidden child entry point.
//!
//! (Skeleton: filled in by the module's owner; see DESIGN.md.)

/// The hidden first argument that makes `main` run [`child_main`] instead of the CLI.
pub const CHILD_ARG: &str = "__cairn-sandbox";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Message(String),
}

/// Entry point of the re-executed sandbox helper process.
pub fn child_main() -> std::process::ExitCode {
    eprintln!("cairn: sandbox child not implemented");
    std::process::ExitCode::from(7)
}
