//! A real moto server per test binary (from `VPCMESH_MOTO_SERVER`, which
//! setup.sh exports), and "customer" accounts inside it. Each test uses fresh
//! random account IDs, which moto keeps apart, so tests share one server.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::{provider::SharedCredentialsProvider, Credentials};
use rand::Rng;
use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use tokio::sync::OnceCell;

/// Kills moto when the test process (holding the pipe) goes away.
const WATCHDOG: &str = r#""$@" & m=$!
while read -r _; do :; done
kill $m 2>/dev/null; wait $m"#;

pub struct Moto {
    pub url: String,
    _watchdog: Child,
}

static MOTO: OnceCell<Moto> = OnceCell::const_new();

pub async fn moto() -> &'static Moto {
    MOTO.get_or_init(|| async { Moto::start() }).await
}

impl Moto {
    pub fn start() -> Moto {
        let bin = std::env::var("VPCMESH_MOTO_SERVER").unwrap_or_else(|_| {
            panic!("VPCMESH_MOTO_SERVER is not set: run the tests through ./test.sh, which installs moto")
        });
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("vpcmesh-moto-{port}.log")))
                .expect("moto log file");
        let watchdog = Command::new("bash")
            .args([
                "-c",
                WATCHDOG,
                "moto-watchdog",
                &bin,
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin}: {e}"));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            url,
            _watchdog: watchdog,
        }
    }

    /// A new customer account with the usual role name.
    pub async fn customer(&self) -> Customer {
        let account: String = format!(
            "{:012}",
            rand::rng().random_range(100_000_000_000u64..999_999_999_999)
        );
        let role_arn = format!("arn:aws:iam::{account}:role/vpcmesh-access");
        // moto maps an assumed role's keys to the role's account.
        let sts = aws_sdk_sts::Client::new(&self.config(
            Credentials::new("AKIATESTSETUP0000000", "setup", None, None, "test"),
            "us-east-1",
        ));
        let out = sts
            .assume_role()
            .role_arn(&role_arn)
            .role_session_name("test-setup")
            .send()
            .await
            .expect("moto AssumeRole for setup");
        let c = out.credentials().expect("credentials");
        Customer {
            account,
            role_arn,
            creds: Credentials::new(
                c.access_key_id(),
                c.secret_access_key(),
                Some(c.session_token().to_string()),
                None,
                "test-customer",
            ),
            endpoint: self.url.clone(),
        }
    }

    fn config(&self, creds: Credentials, region: &str) -> SdkConfig {
        config(&self.url, creds, region)
    }
}

fn config(endpoint: &str, creds: Credentials, region: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(server::aws::http_client())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(SharedCredentialsProvider::new(creds))
        .build()
}

/// A customer AWS account in moto, driven directly (as the customer would in
/// their own console) to set up VPCs and check what vpcmesh built.
#[derive(Clone)]
pub struct Customer {
    pub account: String,
    pub role_arn: String,
    creds: Credentials,
    endpoint: String,
}

pub struct TestVpc {
    pub id: String,
    pub cidr: String,
    pub route_tables: Vec<String>,
}

impl Customer {
    /// (access key, secret, session token): what an instance role in this
    /// account would hand an appliance.
    pub fn credentials(&self) -> (String, String, Option<String>) {
        (
            self.creds.access_key_id().to_string(),
            self.creds.secret_access_key().to_string(),
            self.creds.session_token().map(str::to_string),
        )
    }

    /// Posts a Query-API form in `region` as this customer (moto picks the
    /// account by access key and checks no signature while auth is off), for
    /// services the harness has no SDK client for (Auto Scaling).
    pub async fn query(&self, region: &str, service: &str, form: &[(&str, &str)]) -> String {
        unsigned_query(
            &self.endpoint,
            self.creds.access_key_id(),
            region,
            service,
            form,
        )
        .await
    }

    pub fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&config(&self.endpoint, self.creds.clone(), region))
    }

    pub fn cloudformation(&self, region: &str) -> aws_sdk_cloudformation::Client {
        aws_sdk_cloudformation::Client::new(&config(&self.endpoint, self.creds.clone(), region))
    }

    pub fn kms(&self, region: &str) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&config(&self.endpoint, self.creds.clone(), region))
    }

    /// An instance in `vpc_id`'s first subnet that is no appliance (no
    /// vpcmesh tags): (its id, its interface).
    pub async fn untagged_instance(&self, region: &str, vpc_id: &str) -> (String, String) {
        let ec2 = self.ec2(region);
        let subnets = ec2
            .describe_subnets()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("vpc-id")
                    .values(vpc_id)
                    .build(),
            )
            .send()
            .await
            .expect("DescribeSubnets");
        let subnet = subnets.subnets()[0]
            .subnet_id()
            .expect("subnet")
            .to_string();
        let run = ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet)
            .send()
            .await
            .expect("RunInstances");
        let i = &run.instances()[0];
        (
            i.instance_id().expect("id").to_string(),
            i.network_interfaces()[0]
                .network_interface_id()
                .expect("eni")
                .to_string(),
        )
    }

    /// A VPC with one subnet in each of the region's first two AZs and a
    /// route table associated with them.
    pub async fn vpc(&self, region: &str, cidr: &str) -> TestVpc {
        let ec2 = self.ec2(region);
        let vpc = ec2
            .create_vpc()
            .cidr_block(cidr)
            .send()
            .await
            .expect("CreateVpc");
        let vpc_id = vpc
            .vpc()
            .and_then(|v| v.vpc_id())
            .expect("vpc id")
            .to_string();
        let azs = ec2
            .describe_availability_zones()
            .send()
            .await
            .expect("DescribeAvailabilityZones");
        let net: ipnet::Ipv4Net = cidr.parse().expect("cidr");
        let subnets: Vec<ipnet::Ipv4Net> = net
            .subnets(net.prefix_len() + 2)
            .expect("subnets")
            .collect();
        let rt = ec2
            .create_route_table()
            .vpc_id(&vpc_id)
            .send()
            .await
            .expect("CreateRouteTable");
        let rt_id = rt
            .route_table()
            .and_then(|r| r.route_table_id())
            .expect("rt")
            .to_string();
        // A public VPC, as appliances with Elastic IPs need: an Internet
        // gateway and the default route to it.
        let igw = ec2
            .create_internet_gateway()
            .send()
            .await
            .expect("CreateInternetGateway");
        let igw_id = igw
            .internet_gateway()
            .and_then(|g| g.internet_gateway_id())
            .expect("igw")
            .to_string();
        ec2.attach_internet_gateway()
            .internet_gateway_id(&igw_id)
            .vpc_id(&vpc_id)
            .send()
            .await
            .expect("AttachInternetGateway");
        ec2.create_route()
            .route_table_id(&rt_id)
            .destination_cidr_block("0.0.0.0/0")
            .gateway_id(&igw_id)
            .send()
            .await
            .expect("CreateRoute 0.0.0.0/0");
        for (i, az) in azs.availability_zones().iter().take(2).enumerate() {
            let subnet = ec2
                .create_subnet()
                .vpc_id(&vpc_id)
                .cidr_block(subnets[i].to_string())
                .availability_zone(az.zone_name().expect("zone"))
                .send()
                .await
                .expect("CreateSubnet");
            let subnet_id = subnet.subnet().and_then(|s| s.subnet_id()).expect("subnet");
            ec2.associate_route_table()
                .route_table_id(&rt_id)
                .subnet_id(subnet_id)
                .send()
                .await
                .expect("AssociateRouteTable");
        }
        TestVpc {
            id: vpc_id,
            cidr: cidr.to_string(),
            route_tables: vec![rt_id],
        }
    }

    /// A symmetric KMS key in `region`; returns its ARN.
    pub async fn kms_key(&self, region: &str) -> String {
        let out = self
            .kms(region)
            .create_key()
            .description("vpcmesh test key")
            .send()
            .await
            .expect("CreateKey");
        out.key_metadata()
            .and_then(|m| m.arn())
            .expect("key arn")
            .to_string()
    }
}

impl Moto {
    /// Posts a Query-API form as an unsigned caller (moto checks no signature
    /// while auth is off); returns the response body.
    pub async fn query(&self, service: &str, form: &[(&str, &str)]) -> String {
        unsigned_query(
            &self.url,
            "AKIAIOSFODNN7EXAMPLE",
            "us-east-1",
            service,
            form,
        )
        .await
    }

    /// Turns moto's IAM enforcement on (`true`) or off.
    pub async fn enforce_iam(&self, on: bool) {
        let count = if on { "0" } else { "inf" };
        post(&self.url, "/moto-api/reset-auth", "text/plain", "", count).await;
    }

    /// An IAM user in moto's default account (the control plane's own) with
    /// `policy` inline; returns its access key and secret.
    pub async fn iam_user(&self, name: &str, policy: &serde_json::Value) -> Credentials {
        let v = "2010-05-08";
        self.query(
            "iam",
            &[("Action", "CreateUser"), ("UserName", name), ("Version", v)],
        )
        .await;
        self.set_user_policy(name, policy).await;
        let out = self
            .query(
                "iam",
                &[
                    ("Action", "CreateAccessKey"),
                    ("UserName", name),
                    ("Version", v),
                ],
            )
            .await;
        let field = |tag: &str| {
            let open = format!("<{tag}>");
            let start = out.find(&open).map(|i| i + open.len()).expect("key field");
            let end = out[start..].find('<').expect("key field end") + start;
            out[start..end].to_string()
        };
        Credentials::new(
            field("AccessKeyId"),
            field("SecretAccessKey"),
            None,
            None,
            "test",
        )
    }

    pub async fn set_user_policy(&self, name: &str, policy: &serde_json::Value) {
        let doc = policy.to_string();
        self.query(
            "iam",
            &[
                ("Action", "PutUserPolicy"),
                ("UserName", name),
                ("PolicyName", "vpcmesh-control-plane"),
                ("PolicyDocument", &doc),
                ("Version", "2010-05-08"),
            ],
        )
        .await;
    }
}

/// Posts a Query-API form to moto as `access_key` in `region`, unsigned
/// (moto picks the account by access key and checks no signature while auth
/// is off); returns the response body.
async fn unsigned_query(
    endpoint: &str,
    access_key: &str,
    region: &str,
    service: &str,
    form: &[(&str, &str)],
) -> String {
    let body: String = form
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/20260101/{region}/{service}/aws4_request, SignedHeaders=host, Signature=0"
    );
    post(
        endpoint,
        "/",
        "application/x-www-form-urlencoded",
        &auth,
        &body,
    )
    .await
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A minimal HTTP/1.1 POST over loopback (the harness needs no HTTP client crate).
async fn post(base: &str, path: &str, content_type: &str, auth: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to moto");
    let auth = if auth.is_empty() {
        String::new()
    } else {
        format!("Authorization: {auth}\r\n")
    };
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(req.as_bytes())
        .await
        .expect("write to moto");
    let mut out = String::new();
    stream
        .read_to_string(&mut out)
        .await
        .expect("read from moto");
    assert!(
        out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"),
        "moto said: {out}"
    );
    out
}

/// A loopback proxy in front of moto that answers the first `failures`
/// requests whose body or headers contain `matching` (a Query API's
/// `Action=…`, a JSON API's `X-Amz-Target` value) with AWS throttling, and
/// forwards everything else (one request per connection).
pub struct ThrottlingProxy {
    pub url: String,
    pub throttled: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub forwarded_matching: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ThrottlingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ThrottlingProxy {
    pub async fn start(target: &str, matching: &'static str, failures: usize) -> ThrottlingProxy {
        use std::sync::atomic::AtomicUsize;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let target = target.trim_start_matches("http://").to_string();
        let throttled = std::sync::Arc::new(AtomicUsize::new(0));
        let forwarded_matching = std::sync::Arc::new(AtomicUsize::new(0));
        let (t, f) = (throttled.clone(), forwarded_matching.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (target, t, f) = (target.clone(), t.clone(), f.clone());
                tokio::spawn(async move {
                    let _ = proxy_one(client, &target, matching, failures, &t, &f).await;
                });
            }
        });
        ThrottlingProxy {
            url,
            throttled,
            forwarded_matching,
            task,
        }
    }
}

/// One HTTP request from `client`: its head, everything read, where the
/// head ends, and the body's length. None once the client hangs up.
async fn read_request(
    client: &mut tokio::net::TcpStream,
) -> std::io::Result<Option<(String, Vec<u8>, usize, usize)>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Some((head, buf, header_end, length)))
}

async fn proxy_one(
    mut client: tokio::net::TcpStream,
    target: &str,
    matching: &str,
    failures: usize,
    throttled: &std::sync::atomic::AtomicUsize,
    forwarded: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Some((head, buf, header_end, length)) = read_request(&mut client).await? else {
            return Ok(());
        };
        let body = String::from_utf8_lossy(&buf[header_end..]).to_string();
        if body.contains(matching) || head.contains(matching) {
            if throttled.fetch_add(1, Ordering::SeqCst) < failures {
                let xml = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>";
                let res = format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                    xml.len()
                );
                client.write_all(res.as_bytes()).await?;
                continue;
            }
            throttled.fetch_sub(1, Ordering::SeqCst);
            forwarded.fetch_add(1, Ordering::SeqCst);
        }
        // Forward with the connection closed after the answer, then relay it.
        let head = head.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
        let head: String = head
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
        // Tell the client this connection ends here.
        if let Some(i) = answer.windows(2).position(|w| w == b"\r\n") {
            answer.splice(i + 2..i + 2, b"Connection: close\r\n".iter().copied());
        }
        client.write_all(&answer).await?;
        return Ok(());
    }
}

/// A loopback proxy in front of moto that pages EC2 listings as real EC2
/// does (moto 5.2 answers DescribeVpcs, DescribeSubnets and
/// DescribeRouteTables in one page): one item per answer, with a
/// `nextToken` while more are left. Everything else is forwarded as is.
pub struct PagingProxy {
    pub url: String,
    /// Answers that were a page with more after it.
    pub paged: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PagingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The listings paged, and the element that holds each one's items.
const PAGED: [(&str, &str); 3] = [
    ("DescribeVpcs", "vpcSet"),
    ("DescribeSubnets", "subnetSet"),
    ("DescribeRouteTables", "routeTableSet"),
];

impl PagingProxy {
    pub async fn start(target: &str) -> PagingProxy {
        use std::sync::atomic::AtomicUsize;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let target = target.trim_start_matches("http://").to_string();
        let paged = std::sync::Arc::new(AtomicUsize::new(0));
        let p = paged.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (target, p) = (target.clone(), p.clone());
                tokio::spawn(async move {
                    let _ = page_one(client, &target, &p).await;
                });
            }
        });
        PagingProxy { url, paged, task }
    }
}

/// The top-level `<item>…</item>` elements inside `<set>…</set>` of `xml`:
/// (where the set's content starts and ends, each item's text).
fn set_items<'a>(xml: &'a str, set: &str) -> Option<(usize, usize, Vec<&'a str>)> {
    let open = format!("<{set}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{set}>"))?;
    let inner = &xml[start..end];
    let (mut items, mut depth, mut at, mut from) = (Vec::new(), 0usize, 0usize, 0usize);
    loop {
        let next = |tag: &str| inner[at..].find(tag).map(|i| i + at);
        let Some(i) = [next("<item>"), next("</item>")]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        if inner[i..].starts_with("<item>") {
            if depth == 0 {
                from = i;
            }
            depth += 1;
            at = i + "<item>".len();
        } else {
            depth = depth.checked_sub(1)?;
            at = i + "</item>".len();
            if depth == 0 {
                items.push(&inner[from..at]);
            }
        }
    }
    Some((start, end, items))
}

async fn page_one(
    mut client: tokio::net::TcpStream,
    target: &str,
    paged: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some((head, buf, header_end, length)) = read_request(&mut client).await? else {
        return Ok(());
    };
    let body = String::from_utf8_lossy(&buf[header_end..header_end + length]).to_string();
    let listing = PAGED
        .iter()
        .find(|(action, _)| body.split('&').any(|p| p == format!("Action={action}")));
    // The page asked for, and the request moto sees (without the token).
    let mut page = 0usize;
    let forwarded: String = body
        .split('&')
        .filter(|p| match p.strip_prefix("NextToken=") {
            Some(t) => {
                page = t.trim_start_matches("page-").parse().unwrap_or(0);
                false
            }
            None => true,
        })
        .collect::<Vec<_>>()
        .join("&");
    let head: String = head
        .split("\r\n")
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !l.starts_with("connection:") && !l.starts_with("content-length:")
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\r\n");
    let head = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        forwarded.len()
    );
    let mut upstream = tokio::net::TcpStream::connect(target).await?;
    upstream.write_all(head.as_bytes()).await?;
    upstream.write_all(forwarded.as_bytes()).await?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer).await?;
    let Some((_, set)) = listing else {
        client.write_all(&answer).await?;
        return Ok(());
    };
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        client.write_all(&answer).await?;
        return Ok(());
    };
    let (status, xml) = (
        String::from_utf8_lossy(&answer[..split]).to_string(),
        String::from_utf8_lossy(&answer[split + 4..]).to_string(),
    );
    let Some((start, end, items)) = set_items(&xml, set) else {
        client.write_all(&answer).await?;
        return Ok(());
    };
    let one = items.get(page).copied().unwrap_or_default();
    let mut xml = format!("{}{one}{}", &xml[..start], &xml[end..]);
    if page + 1 < items.len() {
        paged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let close = xml.rfind("</").unwrap_or(xml.len());
        xml.insert_str(close, &format!("<nextToken>page-{}</nextToken>", page + 1));
    }
    let status_line = status.lines().next().unwrap_or("HTTP/1.1 200 OK");
    let res = format!(
        "{status_line}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
        xml.len()
    );
    client.write_all(res.as_bytes()).await?;
    Ok(())
}

#[test]
fn the_paging_proxy_finds_top_level_items_only() {
    let xml = "<R><subnetSet><item><id>a</id><tagSet><item><k>x</k></item></tagSet></item><item><id>b</id></item></subnetSet></R>";
    let (start, end, items) = set_items(xml, "subnetSet").expect("a set");
    assert_eq!(
        items,
        [
            "<item><id>a</id><tagSet><item><k>x</k></item></tagSet></item>",
            "<item><id>b</id></item>"
        ]
    );
    assert_eq!(&xml[start..end], items.concat());
}
