//! The Python tools (moto, pytest) in a virtual environment under `target/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// The virtual environment's folder.
pub fn venv_dir(workspace: &Path) -> PathBuf {
    workspace.join("target/py-venv")
}

/// Makes sure the venv exists with exactly the pinned requirements; installs them on first use
/// or when the requirements file changed. Returns the venv's `bin` folder.
pub fn ensure(workspace: &Path) -> anyhow::Result<PathBuf> {
    let requirements_file = workspace.join("xtask/python-requirements.txt");
    let requirements = std::fs::read_to_string(&requirements_file)
        .with_context(|| format!("reading {}", requirements_file.display()))?;
    let venv = venv_dir(workspace);
    let bin = venv.join("bin");
    let stamp = venv.join("installed-requirements.txt");
    if std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == requirements) && bin.join("python").exists() {
        return Ok(bin);
    }
    crate::say(&format!("installing Python tools into {} (first use)", venv.display()));
    if !bin.join("python").exists() {
        let python = ["python3", "python"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))
            .context("no python3 on PATH: install Python 3.10 or newer (apt-get install python3 python3-venv)")?;
        crate::run(Command::new(python).args(["-m", "venv"]).arg(&venv))
            .context("creating the virtual environment (on Debian: apt-get install python3-venv)")?;
    }
    crate::run(
        Command::new(bin.join("python"))
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements_file),
    )
    .context("installing the pinned Python tools with pip")?;
    std::fs::write(&stamp, &requirements)?;
    Ok(bin)
}
