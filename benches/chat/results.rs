//! The run's section appended to load/RESULTS.md: machine, commit, command, load, JSON lines.

use std::io::Write;

use crate::infra;

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim())
        .unwrap_or("?");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{nproc} CPUs ({model}), {:.1} GiB RAM, {}", mem_kib / 1048576.0, sh("uname", &["-sr"]))
}

pub fn append_results(started: chrono::DateTime<chrono::Utc>, load_at_start: &str, lines: &[String]) {
    let path =
        std::env::var("BENCH_RESULTS").unwrap_or_else(|_| format!("{}/load/RESULTS.md", env!("CARGO_MANIFEST_DIR")));
    if path.is_empty() || path == "none" {
        return;
    }
    let commit = sh("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let mut env: Vec<String> =
        std::env::vars().filter(|(k, _)| k.starts_with("BENCH_")).map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();
    env.push("cargo bench --bench chat".into());
    let mut md = String::new();
    md.push_str(&format!("\n## {}\n\n", started.format("%Y-%m-%d %H:%M UTC")));
    md.push_str(&format!("- machine: {}\n", machine()));
    md.push_str(&format!("- commit: `{commit}`{}\n", if dirty { " (dirty work tree)" } else { "" }));
    md.push_str(&format!("- command: `{}`\n", env.join(" ")));
    md.push_str(&format!(
        "- load average at start / end: {} / {} (`cpu_cores.other` = CPU used by other processes during a scenario)\n",
        load_at_start,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
    ));
    // Relative to the repository when it is inside it: a results file names no machine's paths.
    let bin = infra::bin_path();
    let shown = bin.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(&bin);
    md.push_str(&format!("- node binary: `{}`\n\n```json\n", shown.display()));
    for l in lines {
        md.push_str(l);
        md.push('\n');
    }
    md.push_str("```\n");
    let existing = std::path::Path::new(&path).exists();
    match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        Ok(mut f) => {
            if !existing {
                let _ = f.write_all(
                    b"# Benchmark results\n\nAppended by `cargo bench --bench chat` (see load/README.md).\n",
                );
            }
            let _ = f.write_all(md.as_bytes());
            eprintln!("chat bench: appended to {path}");
        }
        Err(e) => eprintln!("chat bench: cannot write {path}: {e}"),
    }
}
