//! The private Postgres cluster behind `./run.sh --embedded-postgres` and the tests.

use server::db::{Durability, PrivateCluster};
use std::{net::TcpStream, os::unix::fs::PermissionsExt};

#[tokio::test]
async fn a_durable_cluster_keeps_its_data_across_restarts_and_stops_with_its_handle() {
    let root = std::path::PathBuf::from(format!(
        "/tmp/vpcmesh-test-pg/durable-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = root.join("pg");

    let cluster = PrivateCluster::start(&dir, Durability::Durable)
        .await
        .expect("first start");
    let url = cluster.ensure_database("keep").await.unwrap();
    let pool = server::db::connect(&url, 16).await.unwrap();
    sqlx::raw_sql("CREATE TABLE notes (body text); INSERT INTO notes VALUES ('still here')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let port = cluster.port();
    drop(cluster);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "postgres stopped with its handle"
    );

    let cluster = PrivateCluster::start(&dir, Durability::Durable)
        .await
        .expect("restart");
    let pool = server::db::connect(&cluster.ensure_database("keep").await.unwrap(), 16)
        .await
        .unwrap();
    let body: String = sqlx::query_scalar("SELECT body FROM notes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(body, "still here");
    pool.close().await;
    drop(cluster);
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test]
async fn bad_database_names_are_refused() {
    let root =
        std::path::PathBuf::from(format!("/tmp/vpcmesh-test-pg/names-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cluster = PrivateCluster::start(&root.join("pg"), Durability::Ephemeral)
        .await
        .unwrap();
    for bad in ["", "Upper", "semi;colon", "quote\"d"] {
        assert!(
            cluster.ensure_database(bad).await.is_err(),
            "{bad:?} accepted"
        );
    }
    drop(cluster);
    std::fs::remove_dir_all(&root).unwrap();
}
