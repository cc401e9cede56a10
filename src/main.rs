//! Thin shim: the hidden helper entry point must run before anything starts a thread
//! (`unshare(CLONE_NEWUSER)` fails in a multi-threaded process), everything else is the CLI.

fn main() -> std::process::ExitCode {
    if std::env::args_os().nth(1).as_deref() == Some(cairn::userns::HELPER_ARG.as_ref()) {
        return cairn::cli::helper::main();
    }
    cairn::cli::main()
}
