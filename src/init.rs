//! A minimal init for when the server is PID 1 (a container started without `--init` or tini):
//! the process forks; the child goes on to be the server, the parent stays PID 1, reaps every
//! process that ends (orphans of the agent's commands are reparented to it), forwards the usual
//! termination signals to the server and exits with the server's status.

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Signals passed on to the server.
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Forks. Returns in the child (the server); never returns in the parent.
#[allow(unsafe_code)]
pub fn run_as_init() {
    let mut handled = SigSet::empty();
    handled.add(Signal::SIGCHLD);
    for s in FORWARDED {
        handled.add(s);
    }
    // Blocked before the fork so none is lost in between; the child restores its mask.
    let mut previous = SigSet::empty();
    if nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled), Some(&mut previous))
        .is_err()
    {
        return;
    }
    // SAFETY: called first thing in `main`, before any other thread exists, so the child is a
    // faithful copy of a single-threaded process.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ =
                nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
        }
        Ok(ForkResult::Parent { child }) => supervise(child, &handled),
        Err(e) => {
            eprintln!(
                "agent-server: cannot fork an init process ({e}); running as PID 1 without it"
            );
            let _ =
                nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
        }
    }
}

/// The init loop: waits for signals, reaps, forwards; exits when the server has ended.
fn supervise(server: Pid, handled: &SigSet) -> ! {
    loop {
        match handled.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {
                if let Some(code) = reap(server) {
                    std::process::exit(code);
                }
            }
            Ok(signal) => {
                let _ = kill(server, signal);
            }
        }
    }
}

/// Reaps every ended child; the server's exit code once it has ended.
fn reap(server: Pid) -> Option<i32> {
    let mut server_code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == server => server_code = Some(code),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == server => {
                server_code = Some(128 + signal as i32);
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return server_code,
            Ok(_) => {}
        }
    }
}
