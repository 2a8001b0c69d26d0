//! Running one subprocess: its own process group, a wall-time limit that
//! kills the whole group, bounded capture of stdout and stderr; and the
//! resource limits (`prlimit`) put in front of a test command.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use agentry_core::{Error, Result, SandboxLimits};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::task::JoinHandle;

/// How long to wait for a killed process to be reaped, and for its pipes to
/// drain, before giving up on them.
const REAP_GRACE: Duration = Duration::from_secs(5);

/// The resource limits in front of the command: `prlimit` (util-linux),
/// one flag per limit. Inside the jail it runs last, after the namespaces
/// exist, so the process limit counts the run's own processes.
#[derive(Debug, Clone)]
pub(crate) struct Rlimits<'a> {
    pub prlimit: &'a Path,
    pub limits: &'a SandboxLimits,
}

impl Rlimits<'_> {
    /// `prlimit --as=… --cpu=… --fsize=… --nofile=… --nproc=… -- command…`.
    pub(crate) fn wrap(&self, command: &[String]) -> Vec<OsString> {
        let l = self.limits;
        let mut argv: Vec<OsString> = vec![self.prlimit.as_os_str().to_owned()];
        argv.push(format!("--as={}", l.memory_bytes).into());
        // RLIMIT_CPU is whole seconds; zero would mean "none left".
        argv.push(format!("--cpu={}", l.cpu_time.as_secs().max(1)).into());
        argv.push(format!("--fsize={}", l.file_size_bytes).into());
        argv.push(format!("--nofile={}", l.open_files).into());
        argv.push(format!("--nproc={}", l.processes).into());
        argv.push("--".into());
        argv.extend(command.iter().map(OsString::from));
        argv
    }
}

/// What one limited subprocess did.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub duration: Duration,
}

/// One subprocess to run.
#[derive(Debug, Clone)]
pub(crate) struct Spec<'a> {
    pub argv: &'a [OsString],
    pub cwd: &'a Path,
    /// The whole environment (the parent's is not inherited).
    pub env: &'a [(String, OsString)],
    pub wall_time: Duration,
    pub output_bytes: usize,
}

/// Kills the child's process group when dropped (also when the caller's
/// future is cancelled), so no test process outlives its run.
struct GroupKiller(Option<Pid>);

impl GroupKiller {
    fn kill(&self) {
        if let Some(pgid) = self.0 {
            // ESRCH (the group is already empty) is the normal case.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `spec` in its own process group with stdin closed. A run past the
/// wall-time limit is killed (the whole group) and reported with
/// `timed_out`; errors are only for processes that could not be started.
pub(crate) async fn run(spec: Spec<'_>) -> Result<Outcome> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(Error::invalid("empty command"));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);

    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|error| {
        Error::permanent(format!(
            "could not start `{}`: {error}",
            program.to_string_lossy()
        ))
    })?;
    // The child leads its own group, so its pid is the group id. Never
    // signal group 0 or 1: that would be our own group or everything.
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .filter(|id| *id > 1)
        .map(Pid::from_raw);
    let killer = GroupKiller(pgid);

    let stdout = spawn_tail_reader(child.stdout.take(), spec.output_bytes);
    let stderr = spawn_tail_reader(child.stderr.take(), spec.output_bytes);

    let (status, timed_out): (Option<ExitStatus>, bool) =
        match tokio::time::timeout(spec.wall_time, child.wait()).await {
            Ok(Ok(status)) => {
                // Leftover background processes would keep the pipes open.
                killer.kill();
                (Some(status), false)
            }
            Ok(Err(error)) => {
                killer.kill();
                let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
                return Err(Error::transient(format!(
                    "waiting for `{}` failed: {error}",
                    program.to_string_lossy()
                )));
            }
            Err(_elapsed) => {
                killer.kill();
                // Reap the killed child so it does not linger as a zombie.
                let status = tokio::time::timeout(REAP_GRACE, child.wait())
                    .await
                    .ok()
                    .and_then(|r| r.ok());
                (status, true)
            }
        };
    let duration = started.elapsed();
    let stdout = collect_tail(stdout).await;
    let stderr = collect_tail(stderr).await;
    drop(killer);

    use std::os::unix::process::ExitStatusExt;
    Ok(Outcome {
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        timed_out,
        stdout,
        stderr,
        duration,
    })
}

fn spawn_tail_reader<R>(reader: Option<R>, limit: usize) -> Option<JoinHandle<Vec<u8>>>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    reader.map(|r| tokio::spawn(read_tail(r, limit)))
}

async fn collect_tail(handle: Option<JoinHandle<Vec<u8>>>) -> String {
    let Some(mut handle) = handle else {
        return String::new();
    };
    match tokio::time::timeout(REAP_GRACE, &mut handle).await {
        Ok(Ok(bytes)) => tail_text(&bytes),
        Ok(Err(_join_error)) => String::new(),
        Err(_elapsed) => {
            // A process outside the group still holds the pipe open.
            handle.abort();
            String::new()
        }
    }
}

/// Reads to the end, keeping only the last `limit` bytes.
async fn read_tail<R: AsyncRead + Unpin>(mut reader: R, limit: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > limit.saturating_mul(2).max(chunk.len()) {
                    let cut = buf.len() - limit;
                    buf.drain(..cut);
                }
            }
        }
    }
    if buf.len() > limit {
        let cut = buf.len() - limit;
        buf.drain(..cut);
    }
    buf
}

/// Lossy UTF-8, without a broken character at the cut.
pub(crate) fn tail_text(bytes: &[u8]) -> String {
    let start = bytes
        .iter()
        .take(3)
        .take_while(|b| (**b & 0b1100_0000) == 0b1000_0000)
        .count();
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// A binary's full path: `name` itself when it has a `/`, else the first
/// executable match on `path`.
pub(crate) fn find_program(name: &Path, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.components().count() > 1 {
        return is_exec(name).then(|| name.to_path_buf());
    }
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| is_exec(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlimits_name_every_limit_before_the_command() {
        let limits = SandboxLimits {
            memory_bytes: 1024,
            cpu_time: Duration::from_millis(1500),
            file_size_bytes: 4096,
            open_files: 64,
            processes: 32,
            ..SandboxLimits::default()
        };
        let argv: Vec<String> = Rlimits {
            prlimit: Path::new("/usr/bin/prlimit"),
            limits: &limits,
        }
        .wrap(&["python3".into(), "-m".into(), "unittest".into()])
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
        assert_eq!(
            argv,
            [
                "/usr/bin/prlimit",
                "--as=1024",
                "--cpu=1",
                "--fsize=4096",
                "--nofile=64",
                "--nproc=32",
                "--",
                "python3",
                "-m",
                "unittest"
            ]
        );
    }

    #[test]
    fn tail_text_drops_a_broken_leading_character() {
        assert_eq!(tail_text("é!".as_bytes()), "é!");
        assert_eq!(tail_text(&"é!".as_bytes()[1..]), "!");
        assert_eq!(tail_text(b""), "");
    }

    #[tokio::test]
    async fn read_tail_keeps_the_last_bytes() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let got = read_tail(&data[..], 1000).await;
        assert_eq!(got, &data[data.len() - 1000..]);
        assert!(read_tail(&data[..], 0).await.is_empty());
    }
}
