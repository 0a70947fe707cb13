//! Races of the commit protocol against the SQL catalog (fixture in [`super::tests`]): two
//! workers committing at once, and the interleavings the zombie guard must survive — another
//! worker's commit landing between the guard's check and the catalog's compare-and-swap.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use iceberg::table::Table;
use iceberg::{Catalog, Result, TableCommit};
use iceberg_catalog_sql::SqlCatalog;
use std::collections::BTreeMap;

use super::commit::{commit, CommitOutcome};
use super::guard::delegate_catalog;
use super::tests::{assert_exactly_once, committed, Fixture, TOPIC};
use crate::model::TopicPartition;

/// Two workers (two catalog clients, as two processes) commit their own partitions at the same
/// time; conflicts are retried on the refreshed table and every commit lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_of_two_workers_all_land_once() {
    let (f, cat) = Fixture::new().await;
    concurrent(f, cat).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_of_two_workers_in_s3_all_land_once() {
    let (f, cat) = Fixture::on_s3().await;
    concurrent(f, cat).await;
}

async fn concurrent(f: Fixture, cat: SqlCatalog) {
    let f = Arc::new(f);
    let cat2 = f.second_catalog().await;
    const COMMITS: i64 = 8;
    let worker = |cat: SqlCatalog, p: i32| {
        let f = f.clone();
        tokio::spawn(async move {
            let mut attempts = 0;
            for i in 0..COMMITS {
                match f
                    .commit_range(&cat, p, i * 10, i * 10 + 10, &format!("w{p}"))
                    .await
                {
                    CommitOutcome::Committed { attempts: a, .. } => attempts += a,
                    other => panic!("{other:?}"),
                }
            }
            attempts
        })
    };
    let a = worker(cat, 0);
    let b = worker(cat2, 1);
    let attempts = a.await.unwrap() + b.await.unwrap();
    assert!(attempts >= 2 * COMMITS as u32);
    let cat = f.second_catalog().await;
    assert_exactly_once(&f.scan(&cat).await, &[(0, COMMITS * 10), (1, COMMITS * 10)]);
    assert_eq!(
        f.offsets(&cat, &[0, 1]).await,
        BTreeMap::from([(0, COMMITS * 10), (1, COMMITS * 10)])
    );
}

type Hook = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A catalog that runs `hook` (another worker's commit) inside the first `update_table`, after
/// the guard's check and before the catalog's compare-and-swap: the worst interleaving.
struct Interleave {
    inner: Arc<SqlCatalog>,
    hook: tokio::sync::Mutex<Option<Hook>>,
}

impl std::fmt::Debug for Interleave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interleave")
    }
}

delegate_catalog! {
impl Catalog for Interleave {
    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        let hook = self.hook.lock().await.take();
        if let Some(h) = hook {
            h.await;
        }
        self.inner.update_table(commit).await
    }
}
}

/// Sets up: the table at `p0 = 100` (worker A), a commit by worker B landing between A's check
/// and A's swap, then A's commit. Returns A's outcome and the fixture.
async fn interleaved(
    b_partition: i32,
    b_range: (i64, i64),
    s3: bool,
) -> (CommitOutcome, Arc<Fixture>, Arc<SqlCatalog>) {
    let (f, cat) = if s3 {
        Fixture::on_s3().await
    } else {
        Fixture::new().await
    };
    assert!(committed(&f.commit_range(&cat, 0, 0, 100, "a").await));
    let cat = Arc::new(cat);
    let f = Arc::new(f);
    // B's upload happens first; its commit runs inside A's update_table.
    let table = cat.load_table(&f.ident).await.unwrap();
    let b_req = f.request(
        vec![
            f.write(&table, b_partition, b_range.0..b_range.1, "b")
                .await,
        ],
        &[(b_partition, b_range.0, b_range.1)],
    );
    let hook: Hook = {
        let (cat, f) = (cat.clone(), f.clone());
        Box::pin(async move {
            let o = commit(&*cat, &f.ident, &b_req).await.unwrap();
            assert!(committed(&o), "{o:?}");
        })
    };
    let a_req = f.request(
        vec![f.write(&table, 0, 100..150, "a").await],
        &[(0, 100, 150)],
    );
    let racing = Interleave {
        inner: cat.clone(),
        hook: tokio::sync::Mutex::new(Some(hook)),
    };
    let outcome = commit(&racing, &f.ident, &a_req).await.unwrap();
    (outcome, f, cat)
}

/// A concurrent commit of another partition lands between A's check and A's swap: A's commit
/// fails its snapshot requirement, is retried on the refreshed table, and lands.
#[tokio::test]
async fn a_commit_racing_another_partition_is_retried_and_lands() {
    let (outcome, f, cat) = interleaved(1, (0, 40), false).await;
    match outcome {
        CommitOutcome::Committed { attempts, .. } => {
            assert_eq!(attempts, 2, "one conflict retried")
        }
        other => panic!("{other:?}"),
    }
    assert_exactly_once(&f.scan(&*cat).await, &[(0, 150), (1, 40)]);
}

/// The zombie: partition 0 moved to B, which committed 100..130 between A's check and A's
/// swap. A's commit fails its snapshot requirement; on the retry the guard sees the table past
/// A's first offset and refuses. Nothing of A's is in the table.
#[tokio::test]
async fn a_zombie_commit_is_refused_even_when_it_races_the_new_owner() {
    zombie_race(false).await;
}

#[tokio::test]
async fn a_zombie_commit_in_s3_is_refused_even_when_it_races_the_new_owner() {
    zombie_race(true).await;
}

async fn zombie_race(s3: bool) {
    let (outcome, f, cat) = interleaved(0, (100, 130), s3).await;
    match outcome {
        CommitOutcome::Refused(r) => {
            assert_eq!((r.start, r.table_next), (100, 130));
            assert_eq!(r.tp, TopicPartition::new(TOPIC, 0));
            assert!(r.to_string().contains("moved to another worker"));
        }
        other => panic!("{other:?}"),
    }
    assert_exactly_once(&f.scan(&*cat).await, &[(0, 130)]);
    assert_eq!(f.offsets(&*cat, &[0]).await[&0], 130);
}

/// The plain zombie: it commits after the new owner already did; refused before it writes any
/// manifest.
#[tokio::test]
async fn a_zombie_commit_after_the_new_owner_is_refused() {
    let (f, cat) = Fixture::new().await;
    assert!(committed(&f.commit_range(&cat, 0, 0, 100, "a").await));
    assert!(committed(&f.commit_range(&cat, 0, 100, 200, "b").await));
    let o = f.commit_range(&cat, 0, 100, 150, "a").await;
    assert!(
        matches!(o, CommitOutcome::Refused(ref r) if r.table_next == 200),
        "{o:?}"
    );
    assert_exactly_once(&f.scan(&cat).await, &[(0, 200)]);
}
