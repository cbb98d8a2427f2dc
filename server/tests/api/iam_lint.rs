//! Every IAM policy vpcmesh ships (the customer's access role and its
//! permissions boundary, the appliances' instance role) linted with
//! parliament, an IAM policy linter (installed by ./test.sh beside cfn-lint).

use serde_json::Value;
use std::collections::BTreeMap;

const APPLIANCE_STACK: &str = include_str!("../../templates/appliance-stack.yaml");

fn parliament() -> String {
    std::env::var("VPCMESH_PARLIAMENT").unwrap_or_else(|_| {
        panic!("VPCMESH_PARLIAMENT is not set: run the tests through ./test.sh")
    })
}

/// Sample values for the parameters and pseudo parameters the policies use.
fn values() -> BTreeMap<&'static str, Value> {
    let s = |v: &str| Value::String(v.into());
    BTreeMap::from([
        ("AWS::Partition", s("aws")),
        ("AWS::AccountId", s("111122223333")),
        ("AWS::Region", s("eu-west-1")),
        ("AWS::StackName", s("vpcmesh-0123")),
        (
            "ApplianceBoundary",
            s("arn:aws:iam::111122223333:policy/vpcmesh/vpcmesh-appliance-boundary"),
        ),
        (
            "KmsKeyArn",
            s("arn:aws:kms:eu-west-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
        ),
        ("NetworkId", s("5b0c8a44-3c0e-4e3a-9a57-1f2d7c0e9b11")),
        ("SiteId", s("0d3a5d1e-7f6b-4f0e-8d5c-2a9b8c7d6e5f")),
        ("AllocationId", s("eipalloc-0123456789abcdef0")),
        (
            "RouteTableArns",
            serde_json::json!([
                "arn:aws:ec2:eu-west-1:111122223333:route-table/rtb-0123456789abcdef0",
                "arn:aws:ec2:eu-west-1:111122223333:route-table/rtb-0fedcba9876543210"
            ]),
        ),
    ])
}

/// `v` with `Ref` and `Fn::Sub` (the only intrinsics the policies use)
/// replaced by sample values; a list parameter splices into its list.
fn resolve(v: &Value, values: &BTreeMap<&str, Value>) -> Value {
    let lookup = |name: &str| {
        values
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no sample value for {name}"))
    };
    match v {
        Value::Object(o) if o.len() == 1 && o.contains_key("Ref") => {
            lookup(o["Ref"].as_str().expect("Ref names a parameter"))
        }
        Value::Object(o) if o.len() == 1 && o.contains_key("Fn::Sub") => {
            let mut text = o["Fn::Sub"].as_str().expect("a plain Fn::Sub").to_string();
            while let Some(start) = text.find("${") {
                let end = start + text[start..].find('}').expect("closed ${");
                let name = text[start + 2..end].to_string();
                let value = lookup(&name);
                text.replace_range(start..=end, value.as_str().expect("a string value"));
            }
            Value::String(text)
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), resolve(v, values)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .flat_map(|item| match resolve(item, values) {
                    Value::Array(spliced) if item.get("Ref").is_some() => spliced,
                    one => vec![one],
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// (where, policy document) for every identity policy in a template.
fn policies(name: &str, yaml: &str) -> Vec<(String, Value)> {
    let t: Value = serde_norway::from_str(yaml).expect("the template is YAML");
    let values = values();
    let mut out = Vec::new();
    for (logical, r) in t["Resources"].as_object().expect("resources") {
        match r["Type"].as_str() {
            Some("AWS::IAM::Role") => {
                for p in r["Properties"]["Policies"].as_array().into_iter().flatten() {
                    out.push((
                        format!("{name} {logical} {}", p["PolicyName"]),
                        resolve(&p["PolicyDocument"], &values),
                    ));
                }
            }
            Some("AWS::IAM::ManagedPolicy") => out.push((
                format!("{name} {logical}"),
                resolve(&r["Properties"]["PolicyDocument"], &values),
            )),
            _ => {}
        }
    }
    out
}

/// parliament's findings for one policy (one JSON object per line).
fn lint(policy: &Value) -> Vec<Value> {
    let out = std::process::Command::new(parliament())
        .args(["--json", "--string", &policy.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("run parliament: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let findings: Vec<Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("parliament said {l:?}: {e}")))
        .collect();
    // Its exit status agrees with what it printed.
    assert_eq!(
        out.status.success(),
        findings.is_empty(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    findings
}

#[test]
fn parliament_finds_nothing_in_any_policy_vpcmesh_ships() {
    let account = "123456789012".parse().expect("account");
    let customer = server::accounts::role_template::render(&account, "vpcmesh-abc");
    let all: Vec<_> = policies("customer-role", &customer)
        .into_iter()
        .chain(policies("appliance-stack", APPLIANCE_STACK))
        .collect();
    // The access role's two policies, the boundary, the instance role.
    assert_eq!(
        all.len(),
        4,
        "{:?}",
        all.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    for (name, policy) in &all {
        let text = policy.to_string();
        assert!(
            !text.contains("${") && !text.contains("Fn::"),
            "{name}: unresolved: {text}"
        );
        let findings = lint(policy);
        assert!(findings.is_empty(), "{name}: {findings:#?}\n{policy:#}");
    }
}

/// The linter is really looking: the faults the templates used to have are
/// found (a linter that finds nothing in anything proves nothing).
#[test]
fn parliament_flags_the_faults_the_templates_used_to_have() {
    let cases = [
        (
            serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Action": ["ec2:CreateSecurityGroup", "ec2:RunInstances"], "Resource": "*"}]}),
            "RESOURCE_STAR",
        ),
        (
            serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Action": "iam:CreateRole", "Resource": "arn:aws:iam::111122223333:role/vpcmesh/*",
                "Condition": {"StringEquals": {"iam:PermissionsBoundary":
                    "arn:aws:iam::111122223333:policy/vpcmesh/vpcmesh-appliance-boundary"}}}]}),
            "MISMATCHED_TYPE_BUT_USABLE",
        ),
        (
            serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": "arn:aws:ec2:*:111122223333:launch-template/*"}]}),
            "RESOURCE_MISMATCH",
        ),
    ];
    for (policy, issue) in cases {
        let findings = lint(&policy);
        assert!(
            findings.iter().any(|f| f["issue"] == issue),
            "{issue} expected: {findings:#?}"
        );
    }
}
