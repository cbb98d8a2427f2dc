//! A loopback proxy in front of moto that scripts what AWS says about named
//! stacks: a throttled call (AWS's own Throttling error, to every SDK attempt
//! of that call, so the engine sees exactly one failed attempt per scripted
//! throttle), and a stack that is still being created. moto creates a stack
//! within the CreateStack call, so "still creating" is moto's real answer
//! with its status read as `CREATE_IN_PROGRESS`, as CloudFormation reports
//! for minutes. Everything else passes through untouched.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer the call with Throttling (every SDK retry of it too).
    Throttle,
    /// Forward the call; if moto says the stack is `CREATE_COMPLETE`, say
    /// `CREATE_IN_PROGRESS` instead. Answers without a complete stack (it
    /// does not exist yet) pass and leave this fault for the next call.
    InProgress,
}

struct Rule {
    action: String,
    stack: String,
    faults: VecDeque<Fault>,
}

#[derive(Default)]
struct Script {
    rules: Vec<Rule>,
    /// SDK invocation ids of throttled calls: their retries are throttled too.
    throttled_calls: HashSet<String>,
    throttled: usize,
    in_progress: usize,
}

pub struct FaultProxy {
    pub url: String,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    pub async fn start(target: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fault proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let target = target.trim_start_matches("http://").to_string();
        let script = Arc::new(Mutex::new(Script::default()));
        let shared = script.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (target, script) = (target.clone(), shared.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &target, &script).await;
                });
            }
        });
        FaultProxy { url, script, task }
    }

    /// The next calls of `action` (e.g. "CreateStack") on `stack` meet `faults`, in order.
    pub fn script(&self, action: &str, stack: &str, faults: impl IntoIterator<Item = Fault>) {
        self.lock().rules.push(Rule {
            action: action.to_string(),
            stack: stack.to_string(),
            faults: faults.into_iter().collect(),
        });
    }

    /// Calls answered with Throttling (one per call, however often the SDK retried it).
    pub fn throttled_calls(&self) -> usize {
        self.lock().throttled_calls.len()
    }

    /// Requests answered with Throttling, SDK retries included.
    pub fn throttled_requests(&self) -> usize {
        self.lock().throttled
    }

    /// Answers that said a complete stack was still being created.
    pub fn in_progress_answers(&self) -> usize {
        self.lock().in_progress
    }

    /// Scripted faults not met yet.
    pub fn unmet(&self) -> usize {
        self.lock().rules.iter().map(|r| r.faults.len()).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().expect("fault script lock")
    }
}

/// One form field of a Query-API body (stack names need no decoding).
fn field<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

enum Decision {
    Throttle,
    Forward { in_progress: bool },
}

fn decide(script: &Mutex<Script>, invocation: Option<&str>, body: &str) -> Decision {
    let mut s = script.lock().expect("fault script lock");
    if invocation.is_some_and(|id| s.throttled_calls.contains(id)) {
        s.throttled += 1;
        return Decision::Throttle;
    }
    let (Some(action), Some(stack)) = (field(body, "Action"), field(body, "StackName")) else {
        return Decision::Forward { in_progress: false };
    };
    let Some(rule) = s
        .rules
        .iter_mut()
        .find(|r| r.action == action && r.stack == stack && !r.faults.is_empty())
    else {
        return Decision::Forward { in_progress: false };
    };
    match rule.faults.front() {
        Some(Fault::Throttle) => {
            rule.faults.pop_front();
            s.throttled += 1;
            let id = invocation.unwrap_or("unnamed call").to_string();
            s.throttled_calls.insert(id);
            Decision::Throttle
        }
        Some(Fault::InProgress) => Decision::Forward { in_progress: true },
        None => Decision::Forward { in_progress: false },
    }
}

/// Turns a forwarded answer's complete stack into one still being created;
/// returns whether it did (and then takes that fault off the script).
fn still_creating(script: &Mutex<Script>, body: &str, answer: &mut Vec<u8>) -> bool {
    const DONE: &str = "<StackStatus>CREATE_COMPLETE</StackStatus>";
    const BUSY: &str = "<StackStatus>CREATE_IN_PROGRESS</StackStatus>";
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    let content = String::from_utf8_lossy(&answer[split + 4..]).to_string();
    if !content.contains(DONE) {
        return false;
    }
    let content = content.replacen(DONE, BUSY, 1);
    let head: Vec<String> = head
        .split("\r\n")
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {}", content.len())
            } else {
                l.to_string()
            }
        })
        .collect();
    *answer = format!("{}\r\n\r\n{content}", head.join("\r\n")).into_bytes();
    let mut s = script.lock().expect("fault script lock");
    let (action, stack) = (field(body, "Action"), field(body, "StackName"));
    if let Some(rule) = s.rules.iter_mut().find(|r| {
        Some(r.action.as_str()) == action
            && Some(r.stack.as_str()) == stack
            && r.faults.front() == Some(&Fault::InProgress)
    }) {
        rule.faults.pop_front();
    }
    s.in_progress += 1;
    true
}

async fn serve(
    mut client: tokio::net::TcpStream,
    target: &str,
    script: &Mutex<Script>,
) -> std::io::Result<()> {
    loop {
        // One request: headers, then Content-Length bytes of body.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let header_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = client.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < header_end + length {
            let n = client.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buf[header_end..header_end + length]).to_string();
        let invocation = header("amz-sdk-invocation-id");
        let in_progress = match decide(script, invocation.as_deref(), &body) {
            Decision::Throttle => {
                let xml = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>";
                let res = format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                    xml.len()
                );
                client.write_all(res.as_bytes()).await?;
                continue;
            }
            Decision::Forward { in_progress } => in_progress,
        };
        // Forward with the connection closed after the answer, then relay it.
        let head: String = head
            .replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
            .split("\r\n")
            .filter(|l| !l.to_ascii_lowercase().starts_with("connection: keep-alive"))
            .collect::<Vec<_>>()
            .join("\r\n");
        let mut upstream = tokio::net::TcpStream::connect(target).await?;
        upstream.write_all(head.as_bytes()).await?;
        upstream
            .write_all(&buf[header_end..header_end + length])
            .await?;
        let mut answer = Vec::new();
        upstream.read_to_end(&mut answer).await?;
        if in_progress {
            still_creating(script, &body, &mut answer);
        }
        if let Some(i) = answer.windows(2).position(|w| w == b"\r\n") {
            answer.splice(i + 2..i + 2, b"Connection: close\r\n".iter().copied());
        }
        client.write_all(&answer).await?;
        return Ok(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_call_stays_throttled_through_its_sdk_retries() {
        let s = Mutex::new(Script::default());
        s.lock().expect("lock").rules.push(Rule {
            action: "CreateStack".into(),
            stack: "st".into(),
            faults: [Fault::Throttle].into(),
        });
        let body = "Action=CreateStack&StackName=st&Version=2010-05-15";
        assert!(matches!(decide(&s, Some("a"), body), Decision::Throttle));
        assert!(matches!(decide(&s, Some("a"), body), Decision::Throttle));
        assert!(matches!(
            decide(&s, Some("b"), body),
            Decision::Forward { in_progress: false }
        ));
        let other = "Action=CreateStack&StackName=other";
        assert!(matches!(
            decide(&s, Some("c"), other),
            Decision::Forward { in_progress: false }
        ));
        let s = s.lock().expect("lock");
        assert_eq!((s.throttled_calls.len(), s.throttled), (1, 2));
    }

    #[test]
    fn only_a_complete_stack_is_read_as_still_creating() {
        let s = Mutex::new(Script::default());
        s.lock().expect("lock").rules.push(Rule {
            action: "DescribeStacks".into(),
            stack: "st".into(),
            faults: [Fault::InProgress].into(),
        });
        let body = "Action=DescribeStacks&StackName=st";
        let mut missing =
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 19\r\n\r\nStack does not exist".to_vec();
        assert!(!still_creating(&s, body, &mut missing));
        let done = "<StackStatus>CREATE_COMPLETE</StackStatus>";
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{done}",
            done.len()
        )
        .into_bytes();
        assert!(still_creating(&s, body, &mut answer));
        let busy = "<StackStatus>CREATE_IN_PROGRESS</StackStatus>";
        assert_eq!(
            String::from_utf8(answer).expect("utf-8"),
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{busy}",
                busy.len()
            )
        );
        assert_eq!(s.lock().expect("lock").rules[0].faults.len(), 0);
    }
}
