//! Accounts against a real moto: the role template (checked by cfn-lint),
//! registration with a verified AssumeRole, denial by moto's own IAM policy
//! evaluation, and bad input that stores nothing.

use crate::{moto::Moto, support::*};
use axum::http::{Method, StatusCode};
use serde_json::json;
use server::aws::Aws;

async fn accounts_rows(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM aws_accounts").await
}

#[tokio::test]
async fn setup_offers_a_role_template_that_lints_clean() {
    let (app, org) = TestApp::acme_on_moto().await;
    let mut admin = app.signed_in("ada@acme.test").await;
    let r = admin.get("/api/v1/accounts/setup").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let setup = r.json();
    let external: String =
        sqlx::query_scalar("SELECT external_id FROM organizations WHERE id = $1")
            .bind(org)
            .fetch_one(&app.pool)
            .await
            .expect("external id");
    assert_eq!(setup["external_id"], json!(external));
    // moto's default account stands for vpcmesh's own.
    assert_eq!(setup["trusted_account_id"], json!("123456789012"));
    let yaml = setup["template_yaml"].as_str().expect("template");
    assert!(yaml.contains(&format!("Default: \"{external}\"")));

    let download = admin.get("/api/v1/accounts/role-template.yaml").await;
    assert_eq!(download.status, StatusCode::OK);
    assert!(download
        .header("content-disposition")
        .unwrap_or("")
        .contains("attachment"));
    assert_eq!(download.text(), yaml);
    cfn_lint(yaml, "customer-role");

    // Deployed as the customer would, it creates the role in moto.
    let customer = crate::moto::moto().await.customer().await;
    let cfn = customer.cloudformation("us-east-1");
    cfn.create_stack()
        .stack_name("vpcmesh-access")
        .template_body(yaml)
        .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityNamedIam)
        .send()
        .await
        .expect("customer deploys the role template");
    let stack = cfn
        .describe_stacks()
        .stack_name("vpcmesh-access")
        .send()
        .await
        .expect("describe");
    let stack = &stack.stacks()[0];
    assert_eq!(
        stack.stack_status().map(|s| s.as_str()),
        Some("CREATE_COMPLETE")
    );
    let output = |key: &str| {
        stack
            .outputs()
            .iter()
            .find(|o| o.output_key() == Some(key))
            .and_then(|o| o.output_value())
            .unwrap_or_else(|| panic!("{key} output"))
            .to_string()
    };
    let role_arn = output("RoleArn");
    assert_eq!(
        output("BoundaryArn"),
        format!(
            "arn:aws:iam::{}:policy/vpcmesh/vpcmesh-appliance-boundary",
            customer.account
        )
    );
    assert_eq!(role_arn, customer.role_arn);
}

/// Runs cfn-lint (from the moto venv) on a template; fails loudly without it.
pub fn cfn_lint(template: &str, name: &str) {
    let lint = std::env::var("VPCMESH_CFN_LINT")
        .unwrap_or_else(|_| panic!("VPCMESH_CFN_LINT is not set: run the tests through ./test.sh"));
    let path = std::env::temp_dir().join(format!("vpcmesh-{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, template).expect("write template");
    let out = std::process::Command::new(&lint)
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("run {lint}: {e}"));
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "cfn-lint found problems in {name}:\n{}{}\n--- template ---\n{template}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_admin_registers_a_verified_account() {
    let (app, _) = TestApp::acme_on_moto().await;
    let customer = crate::moto::moto().await.customer().await;
    let mut admin = app.signed_in("ada@acme.test").await;
    let r = admin
        .json(
            Method::POST,
            "/api/v1/accounts",
            Some(json!({"account_id": customer.account, "role_arn": customer.role_arn, "label": "Production"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let account = r.json();
    assert_eq!(account["status"], "verified");
    assert_eq!(account["label"], "Production");
    assert!(account["verified_at"].is_string());

    let list = admin.get("/api/v1/accounts").await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(admin.get("/api/v1/overview").await.json()["accounts"], 1);
    assert_eq!(
        app.count("SELECT count(*) FROM audit_events WHERE action = 'account.added'")
            .await,
        1
    );

    // Verify again: still fine, recorded.
    let id = account["id"].as_str().expect("id");
    let r = admin
        .json(Method::POST, &format!("/api/v1/accounts/{id}/verify"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // The same account twice is a conflict and changes nothing.
    let r = admin
        .json(
            Method::POST,
            "/api/v1/accounts",
            Some(json!({"account_id": customer.account, "role_arn": customer.role_arn})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert_eq!(accounts_rows(&app).await, 1);

    // Unused, it can be removed.
    let r = admin
        .json(Method::DELETE, &format!("/api/v1/accounts/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(accounts_rows(&app).await, 0);
}

#[tokio::test]
async fn bad_account_input_gets_a_precise_error_and_stores_nothing() {
    let (app, _) = TestApp::acme_on_moto().await;
    let mut admin = app.signed_in("ada@acme.test").await;
    let cases = [
        (
            json!({"account_id": "12345", "role_arn": "arn:aws:iam::123456789012:role/x"}),
            "account_id",
        ),
        (
            json!({"account_id": "123456789012", "role_arn": "not-an-arn"}),
            "role_arn",
        ),
        (
            json!({"account_id": "123456789012", "role_arn": "arn:aws:iam::210987654321:role/x"}),
            "role_arn",
        ),
        (
            json!({"account_id": "123456789012", "role_arn": "arn:aws:iam::123456789012:user/x"}),
            "role_arn",
        ),
        (
            json!({"account_id": "123456789012", "role_arn": "arn:aws:iam::123456789012:role/x", "label": "x".repeat(101)}),
            "label",
        ),
    ];
    for (body, field) in cases {
        let r = admin
            .json(Method::POST, "/api/v1/accounts", Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["field"], field, "{body}: {}", r.text());
    }
    let r = admin
        .json(
            Method::POST,
            "/api/v1/accounts",
            Some(json!({"account_id": 123})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    for path in [
        "/api/v1/accounts/nope/verify",
        "/api/v1/accounts/6f1c4f0e-0000-4000-8000-000000000000/verify",
    ] {
        let r = admin.json(Method::POST, path, None).await;
        assert!(
            matches!(r.status.as_u16(), 400 | 404),
            "{path}: {}",
            r.text()
        );
    }
    assert_eq!(accounts_rows(&app).await, 0);
}

#[tokio::test]
async fn members_see_accounts_but_cannot_change_them() {
    let (app, org) = TestApp::acme_on_moto().await;
    app.add_user(org, "max@acme.test", app::api::Role::Member)
        .await;
    let customer = crate::moto::moto().await.customer().await;
    let mut member = app.signed_in("max@acme.test").await;
    assert_eq!(member.get("/api/v1/accounts").await.status, StatusCode::OK);
    let r = member
        .json(
            Method::POST,
            "/api/v1/accounts",
            Some(json!({"account_id": customer.account, "role_arn": customer.role_arn})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(accounts_rows(&app).await, 0);
}

#[tokio::test]
async fn a_role_the_control_plane_may_not_assume_is_refused_clearly() {
    // A moto of its own with IAM enforced: the control plane's user may assume
    // only roles named vpcmesh-access, as its real policy would say.
    let moto = Moto::start();
    let allow_assume = |resource: &str| {
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": resource},
            {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}
        ]})
    };
    let own = moto
        .iam_user(
            "control-plane",
            &allow_assume("arn:aws:iam::*:role/vpcmesh-access"),
        )
        .await;
    moto.enforce_iam(true).await;
    let app = TestApp::with_aws(Aws::at_endpoint(&moto.url, own)).await;
    app.org_with_admin("Acme", "ada@acme.test").await;
    let mut admin = app.signed_in("ada@acme.test").await;

    let r = admin
        .json(
            Method::POST,
            "/api/v1/accounts",
            Some(json!({"account_id": "111122223333", "role_arn": "arn:aws:iam::111122223333:role/other"})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 422, "{}", r.text());
    assert_eq!(r.error_code(), "aws_refused");
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("arn:aws:iam::111122223333:role/other"),
        "{message}"
    );
    assert!(message.contains("external ID"), "{message}");
    assert_eq!(accounts_rows(&app).await, 0);

    let r = admin
        .json(
            Method::POST,
            "/api/v1/accounts",
            Some(json!({"account_id": "111122223333", "role_arn": "arn:aws:iam::111122223333:role/vpcmesh-access"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_string();

    // The permission goes away: Verify fails, says why, and records it.
    moto.enforce_iam(false).await;
    moto.set_user_policy(
        "control-plane",
        &allow_assume("arn:aws:iam::*:role/nothing"),
    )
    .await;
    moto.enforce_iam(true).await;
    let r = admin
        .json(Method::POST, &format!("/api/v1/accounts/{id}/verify"), None)
        .await;
    assert_eq!(r.status.as_u16(), 422, "{}", r.text());
    let list = admin.get("/api/v1/accounts").await.json();
    assert_eq!(list[0]["status"], "failed", "{list}");
    assert!(list[0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .contains("could not assume"));
    assert!(
        list[0]["verified_at"].is_string(),
        "the last success is kept"
    );
}
