//! A process that cannot outlive the tests: it runs under a small shell supervisor that
//! reads its stdin, and when the test process ends, for whatever reason, the pipe closes and
//! the supervisor kills it. A SIGTERM sent to the supervisor is passed on, so a graceful stop
//! (a pod's) reaches the process itself.

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, Result};

/// Kills its child when its stdin closes (the test process ended) or when told to, passes
/// SIGTERM on, and exits with the child, so that a process that dies is seen at once.
/// SIGKILL, because a graceful kube-apiserver shutdown takes many seconds and an outage is a
/// crash anyway. `EDGEXDS_REMOVE_AFTER` names a directory removed once the child is gone.
const SUPERVISOR: &str = r#"
exec 3<&0
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM
(read -r _ <&3 || true; kill -KILL "$child" 2>/dev/null) &
status=0
while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
if [ -n "${EDGEXDS_REMOVE_AFTER:-}" ]; then rm -rf "$EDGEXDS_REMOVE_AFTER"; fi
exit $status
"#;

/// `program` with `args` under the supervisor, its stdin piped: the caller keeps the pipe
/// open for as long as the process may live.
pub fn command(program: &Path, args: &[String]) -> Command {
    let mut command = Command::new("sh");
    command.arg("-c").arg(SUPERVISOR).arg("supervisor").arg(program).args(args).stdin(Stdio::piped());
    command
}

pub struct Supervised {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Supervised {
    /// Starts `program` with `args`, its output going to the file `log`.
    pub fn spawn(program: &Path, args: &[String], log: &Path, remove_after: Option<&Path>) -> Result<Self> {
        Self::spawn_with(program, args, &[], log, remove_after)
    }

    /// Same, with `env` added to its environment.
    pub fn spawn_with(
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
        remove_after: Option<&Path>,
    ) -> Result<Self> {
        let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = command(program, args);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        command.stdout(log_file.try_clone()?).stderr(log_file);
        if let Some(dir) = remove_after {
            command.env("EDGEXDS_REMOVE_AFTER", dir);
        }
        let mut child = command.spawn().with_context(|| format!("starting {}", program.display()))?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Asks the process to stop gracefully (SIGTERM, passed on by the supervisor).
    pub fn terminate(&self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
    }

    /// Tells the supervisor to kill its child, and waits until both are gone.
    pub fn stop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let _ = self.child.wait();
    }

    /// The supervisor's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself (after [`Supervised::terminate`]).
    pub fn wait(&mut self) {
        let _ = self.child.wait();
    }
}
