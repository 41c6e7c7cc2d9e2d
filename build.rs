//! Build script: embeds the git revision the binary was built from as `CHAT_GIT_REVISION`
//! (`chat_node_info{revision}`, `jobsphere-chat --version`). Order: the `GIT_REVISION`
//! environment variable (container builds pass it as a build argument, the build context has
//! no `.git`), then `git rev-parse HEAD` (with `-dirty` for local changes), else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=GIT_REVISION");
    let revision = match std::env::var("GIT_REVISION").ok().filter(|s| !s.trim().is_empty()) {
        Some(r) => r.trim().to_owned(),
        None => match git(&["rev-parse", "HEAD"]) {
            Some(head) => {
                // Rebuild when HEAD moves (a commit, a checkout) or the branch it names does.
                for path in ["HEAD", "index"] {
                    if let Some(p) = git(&["rev-parse", "--git-path", path]) {
                        println!("cargo:rerun-if-changed={p}");
                    }
                }
                if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"])
                    && let Some(p) = git(&["rev-parse", "--git-path", &r])
                {
                    println!("cargo:rerun-if-changed={p}");
                }
                let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
                if dirty { format!("{head}-dirty") } else { head }
            }
            None => "unknown".to_owned(),
        },
    };
    println!("cargo:rustc-env=CHAT_GIT_REVISION={revision}");
}
