//! The `mailfs` binary: everything lives in the library; see `mailfs::cli`.

fn main() -> std::process::ExitCode {
    mailfs::cli::main()
}
