//! A step's tries are its failed attempts: waiting on a stack that is still
//! being created is healthy, never a try, and never uses up the retry budget;
//! real failures (AWS throttling every SDK attempt of a call) do, and the
//! one that spends the budget fails the job naming the step and the error.

use crate::{
    faults::{Fault, FaultProxy},
    moto::{moto, TestVpc},
    networks::{assert_running, place, World},
    support::TestApp,
};
use serde_json::Value;
use server::{aws::Aws, provisioning::retry::RetryPolicy};
use std::time::Duration;
use uuid::Uuid;

/// A budget smaller than the polls the tests script, with short backoffs.
const BUDGET: RetryPolicy = RetryPolicy {
    max_failures: 3,
    first_backoff: Duration::from_millis(200),
    max_backoff: Duration::from_secs(1),
};

/// A world whose AWS is moto behind `proxy`, with the test budget.
async fn world(proxy: &FaultProxy) -> World {
    let app = TestApp::with_aws_and_settings(Aws::local(&proxy.url), |s| s.step_retry = BUDGET);
    World::with_app(app.await).await
}

/// The (address, appliances) stack names of the network's site in `vpc`.
fn stacks_of(net: &Value, vpc: &TestVpc) -> (String, String) {
    let site = net["sites"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["vpc_id"] == vpc.id.as_str()))
        .expect("the VPC's site");
    let uuid = |v: &Value| Uuid::parse_str(v.as_str().unwrap_or_default()).expect("a uuid");
    server::networks::plan::stack_names(uuid(&net["id"]), uuid(&site["id"]))
}

async fn steps(w: &World, id: &str) -> Vec<Value> {
    let job = w.admin_get(&format!("/api/v1/networks/{id}/job")).await;
    job["steps"].as_array().cloned().expect("the job's steps")
}

fn step<'a>(steps: &'a [Value], stack: &str) -> &'a Value {
    steps
        .iter()
        .find(|s| s["stack_name"] == stack)
        .unwrap_or_else(|| panic!("no step for {stack}: {steps:?}"))
}

fn count(s: &Value, field: &str) -> i64 {
    s[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} in {s}"))
}

#[tokio::test]
async fn a_healthy_provisioning_has_no_failed_tries_however_long_its_stacks_take() {
    let proxy = FaultProxy::start(&moto().await.url).await;
    let mut w = world(&proxy).await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.40.0.0/16", true),
            ("eu-west-1", "10.41.0.0/16", true),
        ],
    )
    .await;
    let (id, net, _) = w.full_mesh("patient", &placed, "us-east-1").await;
    // Every stack is still creating for 4 looks: more polls than the budget.
    let mut stacks = Vec::new();
    for p in &placed {
        let (address, appliances) = stacks_of(&net, &p.vpc);
        stacks.extend([address, appliances]);
    }
    for stack in &stacks {
        proxy.script("DescribeStacks", stack, [Fault::InProgress; 4]);
    }
    let took = w.run(&id, "apply", "ready").await;
    eprintln!("provisioned through 16 in-progress stack answers in {took:?}");
    assert_running(&w, &id, &placed).await;
    assert_eq!(proxy.in_progress_answers(), 16, "every stack was waited on");
    assert_eq!(proxy.unmet(), 0);
    assert_eq!(proxy.throttled_requests(), 0);

    let steps = steps(&w, &id).await;
    assert_eq!(steps.len(), 6, "{steps:?}");
    for s in &steps {
        assert_eq!(s["state"], "succeeded", "{s}");
        assert_eq!(count(s, "failures"), 0, "waiting is not a try: {s}");
        assert!(s["error"].is_null() && s["last_error"].is_null(), "{s}");
    }
    for stack in &stacks {
        // The create turn waits once, then 4 answers said "in progress".
        let polls = count(step(&steps, stack), "polls");
        assert!(polls >= 5, "{stack} polled {polls} times");
    }
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert!(page.contains("id=\"steps-table\""), "{page}");
    assert!(
        !page.contains("step-tries"),
        "no step shows a failed try: {page}"
    );
}

#[tokio::test]
async fn a_throttled_step_that_then_waits_on_a_slow_stack_shows_exactly_one_failed_try() {
    let proxy = FaultProxy::start(&moto().await.url).await;
    let mut w = world(&proxy).await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.42.0.0/16", true),
            ("us-west-2", "10.43.0.0/16", true),
        ],
    )
    .await;
    let (id, net, _) = w.full_mesh("bumpy", &placed, "us-east-1").await;
    let (address, _) = stacks_of(&net, &placed[0].vpc);
    proxy.script("CreateStack", &address, [Fault::Throttle]);
    proxy.script("DescribeStacks", &address, [Fault::InProgress; 4]);
    w.run(&id, "apply", "ready").await;
    assert_running(&w, &id, &placed).await;
    assert_eq!(proxy.throttled_calls(), 1);
    assert!(
        proxy.throttled_requests() >= 1,
        "the SDK's own retries met the throttle too"
    );
    assert_eq!(proxy.in_progress_answers(), 4);
    assert_eq!(proxy.unmet(), 0);

    let steps = steps(&w, &id).await;
    let bumpy = step(&steps, &address);
    assert_eq!(bumpy["state"], "succeeded", "{bumpy}");
    assert_eq!(count(bumpy, "failures"), 1, "{bumpy}");
    assert!(count(bumpy, "polls") >= 5, "{bumpy}");
    assert!(bumpy["error"].is_null(), "recovered: {bumpy}");
    assert_eq!(
        bumpy["last_error"], "AWS is throttling cloudformation:CreateStack; it will be retried",
        "{bumpy}"
    );
    for s in steps.iter().filter(|s| s["stack_name"] != address.as_str()) {
        assert_eq!(count(s, "failures"), 0, "{s}");
    }
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert_eq!(page.matches("1 failed try").count(), 1, "{page}");
    assert!(!page.contains("failed tries"), "{page}");
    assert!(
        page.contains("last error: AWS is throttling cloudformation:CreateStack"),
        "the recovered step still says what went wrong: {page}"
    );
}

#[tokio::test]
async fn waits_beyond_the_retry_budget_leave_it_whole_for_real_failures() {
    // Before, every turn counted: 8 polls spent a budget of 3, and the first
    // throttle after them failed the step.
    let proxy = FaultProxy::start(&moto().await.url).await;
    let mut w = world(&proxy).await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.44.0.0/16", true),
            ("eu-central-1", "10.45.0.0/16", true),
        ],
    )
    .await;
    let (id, net, _) = w
        .full_mesh("slow then throttled", &placed, "us-east-1")
        .await;
    let (address, _) = stacks_of(&net, &placed[1].vpc);
    let mut script = vec![Fault::InProgress; 8];
    script.extend([Fault::Throttle, Fault::Throttle]);
    proxy.script("DescribeStacks", &address, script);
    w.run(&id, "apply", "ready").await;
    assert_running(&w, &id, &placed).await;
    assert_eq!(
        (proxy.in_progress_answers(), proxy.throttled_calls()),
        (8, 2)
    );
    assert_eq!(proxy.unmet(), 0);

    let steps = steps(&w, &id).await;
    let s = step(&steps, &address);
    assert_eq!(s["state"], "succeeded", "{s}");
    assert_eq!(count(s, "failures"), 2, "{s}");
    assert!(count(s, "polls") >= 9, "{s}");
    assert_eq!(
        s["last_error"], "AWS is throttling cloudformation:DescribeStacks; it will be retried",
        "{s}"
    );
}

#[tokio::test]
async fn consecutive_failures_spend_the_retry_budget_and_fail_the_job_naming_the_step() {
    let proxy = FaultProxy::start(&moto().await.url).await;
    let mut w = world(&proxy).await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.46.0.0/16", true),
            ("us-west-2", "10.47.0.0/16", true),
        ],
    )
    .await;
    let (id, net, _) = w
        .full_mesh("throttled for good", &placed, "us-east-1")
        .await;
    let (address, _) = stacks_of(&net, &placed[0].vpc);
    proxy.script("CreateStack", &address, [Fault::Throttle; 20]);
    w.run(&id, "apply", "failed").await;

    let want = format!(
        "address stack {address}: gave up after 3 failed attempts; last error: AWS kept throttling cloudformation:CreateStack"
    );
    let n = w.admin_get(&format!("/api/v1/networks/{id}")).await;
    assert_eq!(
        n["status_note"],
        format!("Provisioning failed: {want}").as_str(),
        "{n}"
    );
    let job = w.admin_get(&format!("/api/v1/networks/{id}/job")).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error"], want.as_str(), "{job}");
    let steps = job["steps"].as_array().cloned().expect("steps");
    let s = step(&steps, &address);
    assert_eq!(s["state"], "failed", "{s}");
    assert_eq!(count(s, "failures"), 3, "{s}");
    assert_eq!(s["error"], want.as_str(), "{s}");

    // The budget is the end: no fourth CreateStack goes out.
    tokio::time::sleep(BUDGET.max_backoff * 3).await;
    assert_eq!(proxy.throttled_calls(), 3);
    assert_eq!(proxy.unmet(), 17);
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert!(page.contains("3 failed tries"), "{page}");
    assert!(page.contains("gave up after 3 failed attempts"), "{page}");
}
