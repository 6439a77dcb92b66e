//! `pyexec completions`: shell completion scripts generated from the command line's definition.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

/// Print a shell completion script to stdout
///
/// Install it for your shell:
///
///   bash: pyexec completions bash > ~/.local/share/bash-completion/completions/pyexec
///
///   zsh:  pyexec completions zsh > ~/.zfunc/_pyexec
///         (with `fpath+=~/.zfunc; autoload -Uz compinit; compinit` in ~/.zshrc)
///
///   fish: pyexec completions fish > ~/.config/fish/completions/pyexec.fish
///
/// Then start a new shell.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: Shell,
}

impl CompletionsArgs {
    pub fn run(self) {
        let mut command = Cli::command();
        let name = command.get_name().to_owned();
        clap_complete::generate(self.shell, &mut command, name, &mut std::io::stdout());
    }
}
