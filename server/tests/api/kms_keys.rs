//! The wizard's KMS key picker against a real moto: an account's
//! customer-managed keys listed by alias through its role, and the same clear
//! errors the VPC listing gives for a bad region, a foreign or unknown
//! account, a role that cannot be assumed, and throttling.

use crate::{
    moto::{moto, Customer, Moto, ThrottlingProxy},
    networks::World,
    support::*,
};
use axum::http::StatusCode;
use serde_json::{json, Value};
use server::aws::Aws;

/// A new key in `region` named by `alias` (if any); returns its key ID.
async fn key_with_alias(customer: &Customer, region: &str, alias: Option<&str>) -> String {
    let kms = customer.kms(region);
    let key = kms
        .create_key()
        .description("vpcmesh picker test key")
        .send()
        .await
        .expect("CreateKey");
    let key_id = key
        .key_metadata()
        .map(|m| m.key_id().to_string())
        .expect("key id");
    if let Some(alias) = alias {
        kms.create_alias()
            .alias_name(alias)
            .target_key_id(&key_id)
            .send()
            .await
            .expect("CreateAlias");
    }
    key_id
}

/// vpcmesh's id for the world's (only) account.
async fn account_ref(w: &World) -> String {
    w.admin_get("/api/v1/accounts").await[0]["id"]
        .as_str()
        .expect("account id")
        .to_string()
}

#[tokio::test]
async fn the_picker_lists_exactly_the_accounts_aliased_keys_in_a_region() {
    let mut w = World::new().await;
    let region = "eu-west-2";
    // Created out of order: the answer is sorted by alias.
    let zeta = key_with_alias(&w.customer, region, Some("alias/zeta-network")).await;
    let alpha = key_with_alias(&w.customer, region, Some("alias/alpha-network")).await;
    key_with_alias(&w.customer, region, None).await;
    let account = account_ref(&w).await;

    let r = w
        .admin
        .get(&format!(
            "/api/v1/accounts/{account}/kms-keys?region={region}"
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let arn = |id: &str| format!("arn:aws:kms:{region}:{}:key/{id}", w.customer.account);
    // moto lists its AWS-managed aliases (alias/aws/…) too; they are not offered.
    assert_eq!(
        r.json(),
        json!([
            {"alias": "alias/alpha-network", "key_id": alpha, "key_arn": arn(&alpha)},
            {"alias": "alias/zeta-network", "key_id": zeta, "key_arn": arn(&zeta)},
        ])
    );
    // The ARN offered is the one KMS itself reports for the key.
    let described = w
        .customer
        .kms(region)
        .describe_key()
        .key_id(&alpha)
        .send()
        .await
        .expect("DescribeKey");
    assert_eq!(
        described.key_metadata().and_then(|m| m.arn()),
        Some(arn(&alpha).as_str())
    );

    // Another region of the same account has none of them.
    let r = w
        .admin
        .get(&format!(
            "/api/v1/accounts/{account}/kms-keys?region=us-east-2"
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), json!([]));

    // Members pick keys too (they read accounts, as they find VPCs).
    let acme: uuid::Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE name = 'Acme'")
        .fetch_one(&w.app.pool)
        .await
        .expect("acme");
    w.app
        .add_user(acme, "max@acme.test", app::api::Role::Member)
        .await;
    let mut max = w.app.signed_in("max@acme.test").await;
    let r = max
        .get(&format!(
            "/api/v1/accounts/{account}/kms-keys?region={region}"
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json().as_array().map(Vec::len), Some(2));

    // Signed out, nothing.
    let r = w
        .app
        .client()
        .get(&format!(
            "/api/v1/accounts/{account}/kms-keys?region={region}"
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
}

/// The error of `GET /api/v1/accounts/{account}/{what}?region=…` (status, body).
async fn listing_error(
    client: &mut Client,
    account: &str,
    what: &str,
    region: &str,
) -> (u16, Value) {
    let r = client
        .get(&format!(
            "/api/v1/accounts/{account}/{what}?region={region}"
        ))
        .await;
    (r.status.as_u16(), r.json())
}

#[tokio::test]
async fn bad_regions_and_accounts_get_the_vpc_listings_errors() {
    let mut w = World::new().await;
    let account = account_ref(&w).await;

    let (status, body) = listing_error(&mut w.admin, &account, "kms-keys", "mars-east-1").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_input");
    assert_eq!(body["error"]["field"], "region");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("'mars-east-1' is not an AWS region")),
        "{body}"
    );
    assert_eq!(
        (status, body),
        listing_error(&mut w.admin, &account, "vpcs", "mars-east-1").await
    );

    // Another organization's account, an unknown one, and no id at all.
    w.app.org_with_admin("Globex", "hank@globex.test").await;
    let mut hank = w.app.signed_in("hank@globex.test").await;
    let keys = listing_error(&mut hank, &account, "kms-keys", "us-east-1").await;
    assert_eq!(keys.0, 404, "{}", keys.1);
    assert_eq!(keys.1["error"]["code"], "not_found");
    assert_eq!(
        keys,
        listing_error(&mut hank, &account, "vpcs", "us-east-1").await
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    for (account, want) in [(unknown.as_str(), 404), ("123456789012", 400)] {
        let keys = listing_error(&mut w.admin, account, "kms-keys", "us-east-1").await;
        assert_eq!(keys.0, want, "{account}: {}", keys.1);
        let vpcs = listing_error(&mut w.admin, account, "vpcs", "us-east-1").await;
        assert_eq!(keys, vpcs, "{account}");
    }
}

#[tokio::test]
async fn a_role_that_cannot_be_assumed_gets_the_vpc_listings_error() {
    // A moto of its own with IAM enforced: the control plane may assume no
    // role of this account (its trust was taken away after registration).
    let moto = Moto::start();
    let own = moto
        .iam_user(
            "control-plane",
            &json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "arn:aws:iam::*:role/nothing"},
                {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}
            ]}),
        )
        .await;
    moto.enforce_iam(true).await;
    let app = TestApp::with_aws(Aws::at_endpoint(&moto.url, own)).await;
    let org = app.org_with_admin("Acme", "ada@acme.test").await;
    let role_arn = "arn:aws:iam::111122223333:role/vpcmesh-access";
    let id = server::accounts::store::insert_verified(
        &app.pool,
        org,
        "111122223333",
        role_arn,
        "registered before",
    )
    .await
    .expect("insert an account")
    .expect("a new account");
    let mut admin = app.signed_in("ada@acme.test").await;

    let id = id.to_string();
    let keys = listing_error(&mut admin, &id, "kms-keys", "us-east-1").await;
    assert_eq!(keys.0, 422, "{}", keys.1);
    assert_eq!(keys.1["error"]["code"], "aws_refused");
    let message = keys.1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("could not assume {role_arn}")),
        "{message}"
    );
    assert!(message.contains("external ID"), "{message}");
    assert_eq!(
        keys,
        listing_error(&mut admin, &id, "vpcs", "us-east-1").await
    );
}

#[tokio::test]
async fn throttled_key_listing_gets_the_vpc_listings_error() {
    // Every call signed for eu-north-1 (the listings; registration talks to
    // STS in us-east-1) is throttled, more often than the SDK retries.
    let proxy = ThrottlingProxy::start(&moto().await.url, "/eu-north-1/", 1000).await;
    let app = TestApp::with_aws(Aws::local(&proxy.url)).await;
    let mut w = World::with_app(app).await;
    let account = account_ref(&w).await;

    let keys = listing_error(&mut w.admin, &account, "kms-keys", "eu-north-1").await;
    assert_eq!(keys.0, 503, "{}", keys.1);
    assert_eq!(keys.1["error"]["code"], "aws_unavailable");
    let message = keys.1["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(
        message,
        format!(
            "AWS did not answer for account {}. Try again in a minute.",
            w.customer.account
        )
    );
    let throttled = proxy.throttled.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        throttled >= 1,
        "ListAliases went through the throttling proxy"
    );
    assert_eq!(
        keys,
        listing_error(&mut w.admin, &account, "vpcs", "eu-north-1").await
    );
    assert!(
        proxy.throttled.load(std::sync::atomic::Ordering::SeqCst) > throttled,
        "DescribeVpcs was throttled too"
    );
    assert_eq!(
        proxy
            .forwarded_matching
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no listing call reached moto"
    );
}
