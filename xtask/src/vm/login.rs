//! From the login line to a proven root shell.
//!
//! Autologin (`(automatic login)`) needs nothing typed; a plain `login:` prompt needs
//! `--login USER[:PASSWORD]`. Escalation tries `sudo -i`, then `su -`, answering password
//! prompts with the given password (or an empty line: installer images have empty passwords).
//! Prompts only pace the typing; root is PROVEN by the framed `id -u` output being `0`.

use crate::diagnose::Phase;
use crate::vm::boot::Greeting;
use crate::vm::guest::Guest;
use crate::vm::serial::{Stop, Wait};
use crate::vm::verdict::Failure;
use regex::Regex;
use std::sync::LazyLock;
use std::time::Duration;

/// A shell waiting for input: a prompt ending in `$` or `#` at the end of what arrived.
static PROMPT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[$#] ?\z").unwrap());
static PASSWORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)password(?: for [^:\n]*)?: *\z").unwrap());
static REFUSED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)Login incorrect|Authentication failure|incorrect password attempt|not in the sudoers|is not allowed to run|a password is required|sudo: .*not found|su: .*(?:failure|denied)").unwrap()
});

#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    pub password: Option<String>,
}

impl std::str::FromStr for Credentials {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (user, password) = match s.split_once(':') {
            Some((u, p)) => (u, Some(p.to_string())),
            None => (s, None),
        };
        if user.is_empty() || user.contains(char::is_whitespace) {
            return Err(format!("`{s}`: expected USER or USER:PASSWORD"));
        }
        Ok(Credentials { user: user.to_string(), password })
    }
}

pub struct Timeouts {
    /// Each step of the login/escalation dialogue.
    pub step: Duration,
    /// One framed command (`id -u`).
    pub command: Duration,
}

/// Login phase: ends when a shell prompt appeared. Returns the user we are logged in as.
pub fn login(
    guest: &mut Guest,
    greeting: Greeting,
    creds: Option<&Credentials>,
    t: &Timeouts,
) -> Result<String, Failure> {
    let phase = Phase::Login;
    let mut at_prompt = false;
    let user = match greeting {
        Greeting::Autologin { user } => {
            guest.step(&format!("autologin as {user}"));
            user
        }
        Greeting::Prompt => {
            let Some(creds) = creds else {
                return Err(Failure::fail(
                    phase,
                    "login-prompt",
                    "the console shows a `login:` prompt (no autologin); pass `--login USER[:PASSWORD]`",
                ));
            };
            guest
                .type_line(&creds.user, &format!("{}\n", creds.user))
                .map_err(|s| stop(phase, s, guest, "typing the user name"))?;
            let hit = guest
                .serial
                .expect(&[&*PASSWORD, &*PROMPT, &*REFUSED], Wait::new(t.step, Some(t.step)))
                .map_err(|s| stop(phase, s, guest, "waiting for a password prompt or shell after the user name"))?;
            if hit.index == 0 {
                let pw = creds.password.clone().unwrap_or_default();
                guest
                    .type_line("(password)", &format!("{pw}\n"))
                    .map_err(|s| stop(phase, s, guest, "typing the password"))?;
                let hit = guest
                    .serial
                    .expect(&[&*PROMPT, &*REFUSED, &*crate::vm::boot::LOGIN_PROMPT], Wait::new(t.step, Some(t.step)))
                    .map_err(|s| stop(phase, s, guest, "waiting for a shell after the password"))?;
                if hit.index != 0 {
                    return Err(Failure::fail(
                        phase,
                        "login-prompt",
                        format!("login as {} was refused: {}", creds.user, hit.group(0).trim()),
                    ));
                }
                at_prompt = true;
            } else if hit.index == 1 {
                at_prompt = true;
            } else if hit.index == 2 {
                return Err(Failure::fail(
                    phase,
                    "login-prompt",
                    format!("login as {} was refused: {}", creds.user, hit.group(0).trim()),
                ));
            }
            creds.user.clone()
        }
    };
    if at_prompt {
        return Ok(user);
    }
    // Pace: let the profile scripts finish and the prompt appear (stall = the shell is quiet).
    match guest.serial.expect(&[&*PROMPT], Wait::new(t.step, Some(Duration::from_secs(5)))) {
        Ok(_) | Err(Stop::Stall(_)) | Err(Stop::Deadline) => Ok(user),
        Err(s) => Err(stop(phase, s, guest, "waiting for the shell prompt")),
    }
}

/// Shell phase: make the shell boring and prove it answers framed commands.
pub fn settle_shell(guest: &mut Guest, t: &Timeouts) -> Result<u32, Failure> {
    let phase = Phase::Shell;
    // The first lines may race the shell's start (a getty or login flushing input): if the
    // first framed command gets no answer soon, say it all once more before judging.
    for attempt in 0..2 {
        let timeout = if attempt == 0 { t.command.min(Duration::from_secs(10)) } else { t.command };
        match guest.make_boring(timeout).and_then(|()| guest.uid(timeout)) {
            Ok(Some(uid)) => return Ok(uid),
            Ok(None) => {
                return Err(Failure::fail(
                    phase,
                    "guest-unresponsive",
                    "the shell answered `id -u` with something that is not a number",
                ))
            }
            Err(f) if attempt == 0 && matches!(f.stop, Stop::Deadline) => {
                guest.step("no answer yet; sending the setup and `id -u` once more");
            }
            Err(f) => return Err(command_failure(phase, f, guest)),
        }
    }
    unreachable!("the second attempt returns")
}

/// Root phase: `sudo -i`, then `su -`; root only when `id -u` prints 0. Returns how.
pub fn escalate(
    guest: &mut Guest,
    uid: u32,
    creds: Option<&Credentials>,
    t: &Timeouts,
) -> Result<&'static str, Failure> {
    let phase = Phase::Root;
    if uid == 0 {
        guest.step("already root (id -u = 0)");
        return Ok("already-root");
    }
    let password = creds.and_then(|c| c.password.clone()).unwrap_or_default();
    let mut tried = Vec::new();
    for (method, line) in [("sudo -i", "sudo -i\n"), ("su -", "su -\n")] {
        settle(guest)?;
        guest.type_line(method, line).map_err(|s| stop(phase, s, guest, method))?;
        let outcome = dialogue(guest, &password, t).map_err(|s| stop(phase, s, guest, method))?;
        if outcome == NO_PROMPT {
            // Perhaps a password prompt we do not recognise: cancel it, or the setup line and
            // `id -u` would be read as the password. At a shell prompt ^C is harmless.
            guest
                .type_line("^C (cancel whatever waits for input)", "\x03")
                .map_err(|s| stop(phase, s, guest, method))?;
            let _ = guest.serial.expect(&[&*PROMPT], Wait::new(Duration::from_secs(5), Some(Duration::from_secs(2))));
        }
        // Whatever the prompts said, ask the shell we are in now.
        let uid = match guest.make_boring(t.command).and_then(|()| guest.uid(t.command)) {
            Ok(u) => u,
            Err(f) => return Err(command_failure(phase, f, guest)),
        };
        guest.step(&format!("after {method}: id -u = {uid:?} ({outcome})"));
        if uid == Some(0) {
            return Ok(method);
        }
        tried.push(format!("`{method}`: {outcome}, id -u = {}", uid.map_or("?".to_string(), |u| u.to_string())));
    }
    Err(Failure::fail(
        phase,
        "escalation-failed",
        format!("could not become root from uid {uid}: {}", tried.join("; ")),
    ))
}

/// Lets the prompt that follows the last command arrive, then forgets it, so the next
/// prompt we see is really the next one.
fn settle(guest: &mut Guest) -> Result<(), Failure> {
    match guest.serial.expect(&[&*PROMPT], Wait::new(Duration::from_secs(2), Some(Duration::from_secs(1)))) {
        Ok(_) | Err(Stop::Deadline) | Err(Stop::Stall(_)) => {
            guest.serial.discard();
            Ok(())
        }
        Err(s) => Err(stop(Phase::Root, s, guest, "waiting for the prompt")),
    }
}

/// What `dialogue` reports when the guest went quiet without a prompt it recognises.
const NO_PROMPT: &str = "no prompt seen";

/// Answers password prompts until a shell prompt or a refusal; returns what happened.
fn dialogue(guest: &mut Guest, password: &str, t: &Timeouts) -> Result<String, Stop> {
    let mut answered = 0;
    loop {
        match guest.serial.expect(&[&*PASSWORD, &*PROMPT, &*REFUSED], Wait::new(t.step, Some(Duration::from_secs(5)))) {
            Ok(hit) if hit.index == 0 => {
                if answered >= 1 {
                    // A second prompt: the password was wrong. Cancel instead of guessing.
                    guest.type_line("^C (cancel the password prompt)", "\x03")?;
                    let _ = guest
                        .serial
                        .expect(&[&*PROMPT], Wait::new(Duration::from_secs(5), Some(Duration::from_secs(3))));
                    return Ok(format!("password refused ({})", hit.group(0).trim()));
                }
                answered += 1;
                guest.type_line("(password)", &format!("{password}\n"))?;
            }
            Ok(hit) if hit.index == 1 => return Ok("shell prompt".to_string()),
            Ok(hit) => {
                let refusal = hit.group(0).trim().to_string();
                let _ =
                    guest.serial.expect(&[&*PROMPT], Wait::new(Duration::from_secs(5), Some(Duration::from_secs(3))));
                return Ok(format!("refused: {refusal}"));
            }
            // Quiet without a recognisable prompt: let `id -u` tell where we are.
            Err(Stop::Stall(_)) => return Ok(NO_PROMPT.to_string()),
            Err(s) => return Err(s),
        }
    }
}

fn stop(phase: Phase, s: Stop, guest: &mut Guest, what: &str) -> Failure {
    Failure::from_stop(phase, s, &mut guest.serial, what)
}

/// A framed command that did not come back: silence means the guest hung.
pub fn command_failure(phase: Phase, f: crate::vm::guest::Failed, guest: &mut Guest) -> Failure {
    let what = format!("running `{}`", f.command);
    match f.stop {
        Stop::Deadline if f.bytes_during == 0 => Failure::fail(
            phase,
            "guest-unresponsive",
            format!("{what}: the guest sent nothing back before the deadline; the shell (or the whole guest) stopped answering"),
        ),
        Stop::Deadline => Failure::fail(
            phase,
            "guest-unresponsive",
            format!("{what}: no end marker before the deadline ({} bytes of other output arrived)", f.bytes_during),
        ),
        s => Failure::from_stop(phase, s, &mut guest.serial, &what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials() {
        let c: Credentials = "root:pw:x".parse().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_deref()), ("root", Some("pw:x")));
        let c: Credentials = "nixos".parse().unwrap();
        assert_eq!(c.password, None);
        assert!("".parse::<Credentials>().is_err());
    }

    #[test]
    fn prompts() {
        assert!(PASSWORD.is_match("[sudo] password for nixos: "));
        assert!(PASSWORD.is_match("Password: "));
        assert!(PROMPT.is_match("\n[nixos@nixos:~]$ "));
        assert!(PROMPT.is_match("[root@nixos:~]# "));
        assert!(REFUSED.is_match("sudo: 3 incorrect password attempts"));
    }

    /// A shell on the other end of the serial socket: answers the setup line and framed
    /// commands as uid 1000, asks an unrecognisable question for `sudo -i`, and refuses
    /// `su -`. Returns what it was sent, one event per line or ^C.
    fn fake_guest(mut sock: std::os::unix::net::UnixStream) -> Vec<String> {
        use std::io::{Read, Write};
        let between = |line: &str, open: &str| -> Option<String> {
            let rest = &line[line.find(open)? + open.len()..];
            Some(rest[..rest.find('\'')?].to_string())
        };
        let mut events = Vec::new();
        let mut asking: Option<&str> = None;
        let mut line = String::new();
        let mut byte = [0u8; 1];
        while sock.read(&mut byte).is_ok_and(|n| n == 1) {
            let reply = match byte[0] {
                3 => {
                    events.push(format!("^C at {asking:?}"));
                    line.clear();
                    asking = None;
                    "^C\n$ ".to_string()
                }
                b'\n' => {
                    let l = std::mem::take(&mut line);
                    if let Some(who) = asking.take() {
                        events.push(format!("answer to {who}: {l:?}"));
                        "su: Authentication failure\n$ ".to_string()
                    } else if let Some(n) = between(&l, "'__B_''") {
                        events.push("setup".into());
                        format!("\n__B_{n}\n")
                    } else if let Some(n) = between(&l, "'__E_''") {
                        events.push("id -u".into());
                        format!("{n}|1000\n{n}|\n{n}|__E_{n}=0\n$ ")
                    } else if l == "sudo -i" {
                        events.push(l);
                        asking = Some("sudo");
                        "Enter PIN for token: ".to_string()
                    } else if l == "su -" {
                        events.push(l);
                        asking = Some("su");
                        "Password: ".to_string()
                    } else {
                        "$ ".to_string()
                    }
                }
                b => {
                    line.push(b as char);
                    continue;
                }
            };
            if sock.write_all(reply.as_bytes()).is_err() {
                break;
            }
        }
        events
    }

    #[test]
    fn an_unknown_prompt_is_cancelled_before_the_setup_line_and_su_is_still_tried() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = camino::Utf8Path::from_path(dir.path()).unwrap();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let fake = std::thread::spawn(move || fake_guest(theirs));
        let serial = crate::vm::serial::Serial::new(ours, run_dir, Box::new(())).unwrap();
        let mut guest = Guest::new(serial);
        let t = Timeouts { step: Duration::from_secs(10), command: Duration::from_secs(5) };
        let f = escalate(&mut guest, 1000, None, &t).unwrap_err();
        assert_eq!(f.finding, "escalation-failed", "{}", f.detail);
        drop(guest);
        let events = fake.join().unwrap();
        assert_eq!(
            events,
            ["sudo -i", "^C at Some(\"sudo\")", "setup", "id -u", "su -", "answer to su: \"\"", "setup", "id -u"],
            "the setup line and `id -u` must never answer a prompt"
        );
    }
}
