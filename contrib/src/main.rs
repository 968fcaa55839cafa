//! `dockpod-docs OUT`: writes the man pages (`OUT/man/*.1`: one for `shim-manager`, one per
//! subcommand as `shim-manager-<sub>`, one for `pod-shim`) and shell completions of
//! `shim-manager` (`OUT/completions/`: bash, zsh, fish), all from the binaries' own clap
//! definitions, so the package's documentation is never out of step with the flags.
//! `contrib/package.sh` runs it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Command, CommandFactory};
use clap_complete::Shell;

fn main() -> anyhow::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: dockpod-docs OUT-DIRECTORY")?;
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let mut front = shim_manager::config::Cli::command();
    front.build();
    write_man(&man, &front, "shim-manager")?;
    // clap's own `help` subcommand is what `--help` already is.
    for sub in front.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("shim-manager-{}", sub.get_name());
        write_man(&man, &sub.clone().name(name.clone()), &name)?;
    }
    let mut shim = pod_shim::config::ShimConfig::command();
    shim.build();
    write_man(&man, &shim, "pod-shim")?;

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut front, "shim-manager", &completions)
            .with_context(|| format!("writing the {shell} completion"))?;
    }
    Ok(())
}

fn write_man(dir: &Path, command: &Command, name: &str) -> anyhow::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .title(name)
        .section("1")
        .source(format!(
            "dockpod {}",
            command.get_version().unwrap_or_default()
        ))
        .manual("dockpod")
        .render(&mut page)
        .with_context(|| format!("rendering the man page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))
}
