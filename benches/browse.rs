//! `cargo bench --bench browse`: latency of
//! `GET /api/projects/:id/files-paginated?limit=100` over real HTTP (the
//! real server in-process) on a project of 1,000,000 files, for page 1 (no
//! cursor) and for a page ~900,000 files deep (the cursor of the path just
//! before that depth), beside a raw baseline: the same keyset SQL the
//! listing runs, straight through tokio-postgres, at both depths.
//!
//! The project is filled the way the product fills it: `files/update` over
//! HTTP from a source device, batches of 10,000 upserts (~40-byte paths
//! whose order is their index). Then `VACUUM ANALYZE` of the table and the
//! log, as autovacuum would do soon after such a load, so it does not run
//! during the measurement. The four measurements are interleaved, one
//! request at a time, in an order rotating each round.
//!
//! Environment: `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) names the server; the
//! bench creates its own `ferry_bench_<random>` database there and drops it
//! at the end. `BROWSE_FILES` (default 1000000), `BROWSE_DEPTH` (default 90%
//! of the files), `BROWSE_REQUESTS` (default 300 per measurement);
//! `FERRY_WORKERS`, `FERRY_DB_POOL_SIZE` as for `ferryd serve`.

mod common;

use std::time::{Duration, Instant};

use common::{BoxError, FileRow};
use ferry::protocol::files::Cursor;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

const FILL_BATCH: usize = 10_000;
const LIMIT: i64 = 100;
const WARM_UP_ROUNDS: usize = 20;
/// p99 we aim for, at any depth.
const GOAL_P99: Duration = Duration::from_millis(5);

/// The listing's SQL (`ferry::domain::files::list`), for live files.
const KEYSET: &str = "SELECT path, size, hash, mime_type, modified_at, version, updated_seq, deleted
             FROM remote_files
             WHERE project_id = $1 AND path > $2 AND path >= $3 AND ($4::text IS NULL OR path < $4)
               AND starts_with(path, $3) AND NOT deleted
             ORDER BY path
             LIMIT $5";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::with_database(run).await
}

/// The stem of the `i`th file: paths sort in index order.
fn stem(i: usize) -> String {
    format!("/library/shelf{:04}/volume_{i:07}_v1", i / 1000)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    FerryFirst,
    FerryDeep,
    RawFirst,
    RawDeep,
}
const PROBES: [Probe; 4] = [Probe::FerryFirst, Probe::FerryDeep, Probe::RawFirst, Probe::RawDeep];

async fn run(url: String) -> Result<bool, BoxError> {
    let files: usize = common::env_num("BROWSE_FILES", 1_000_000)?;
    let depth: usize = common::env_num("BROWSE_DEPTH", files / 10 * 9)?;
    let requests: usize = common::env_num("BROWSE_REQUESTS", 300)?;
    if depth + LIMIT as usize > files {
        return Err(format!("BROWSE_DEPTH {depth} leaves less than a page of the {files} files").into());
    }
    let load_before = common::load();

    let pool = common::prepare(&url, 2).await?;
    let app = common::App::start(&url).await?;
    let owner = app.signup("owner").await?;
    let project = app.create_project(&owner, "Browse").await?;
    let (_, device) = app.source_device(&owner, project).await?;
    println!(
        "browse bench: PostgreSQL {}, load {load_before}, server in-process ({} HTTP workers, {} database connections shared out between them and the background), \
         {files} files, pages of {LIMIT}, deep page after {depth} files, {requests} requests per measurement",
        common::server_version(&pool).await?,
        app.workers,
        app.pool_size,
    );

    // Fill through the product's own path.
    let mut rng = StdRng::from_entropy();
    let mut pushing = Duration::ZERO;
    // Ingest as the project grows: the rate of each tenth of the fill.
    let tenth = (files / 10).max(FILL_BATCH);
    let (mut segment, mut segment_files, mut segments) = (Duration::ZERO, 0, Vec::new());
    let filling = Instant::now();
    for start in (0..files).step_by(FILL_BATCH) {
        let batch: Vec<FileRow> =
            (start..(start + FILL_BATCH).min(files)).map(|i| FileRow::new(&mut rng, &stem(i))).collect();
        let body = common::update_body(&batch);
        let started = Instant::now();
        let answer = common::push_body(&app, &device, project, body).await?;
        let took = started.elapsed();
        pushing += took;
        if answer["applied"].as_u64() != Some(batch.len() as u64) {
            return Err(format!("a fill batch answered {answer}").into());
        }
        segment += took;
        segment_files += batch.len();
        if segment_files >= tenth || start + FILL_BATCH >= files {
            segments.push(format!("{:.0}", segment_files as f64 / segment.as_secs_f64()));
            (segment, segment_files) = (Duration::ZERO, 0);
        }
    }
    println!(
        "fill: {files} files by files/update over HTTP in batches of {FILL_BATCH}: {:.1} s in requests \
         ({:.0} changes/s), {:.1} s in all",
        pushing.as_secs_f64(),
        files as f64 / pushing.as_secs_f64(),
        filling.elapsed().as_secs_f64()
    );
    println!("  changes/s by tenth of the fill, as the project grows: {}", segments.join(", "));
    let vacuuming = Instant::now();
    pool.get().await?.batch_execute("VACUUM ANALYZE remote_files, project_events").await?;
    println!("VACUUM ANALYZE remote_files, project_events: {:.1} s", vacuuming.elapsed().as_secs_f64());

    // The cursor of a page starting at index `depth`: the path just before.
    let client = pool.get().await?;
    let before_deep: String = client
        .query_one(
            "SELECT path FROM remote_files WHERE project_id = $1 AND NOT deleted ORDER BY path OFFSET $2 LIMIT 1",
            &[&project, &(depth as i64 - 1)],
        )
        .await?
        .get(0);
    let deep_first: String = client
        .query_one(
            "SELECT path FROM remote_files WHERE project_id = $1 AND NOT deleted ORDER BY path OFFSET $2 LIMIT 1",
            &[&project, &(depth as i64)],
        )
        .await?
        .get(0);
    let first: String = client
        .query_one("SELECT min(path) FROM remote_files WHERE project_id = $1 AND NOT deleted", &[&project])
        .await?
        .get(0);
    drop(client);
    let cursor = Cursor(before_deep.clone()).encode();
    let first_url = app.url(&format!("/api/projects/{project}/files-paginated?limit={LIMIT}"));
    let deep_url = format!("{first_url}&cursor={cursor}");

    let raw = common::connect(&url).await?;
    let keyset = raw.prepare(KEYSET).await?;
    let no_upper: Option<String> = None;

    let mut samples: [Vec<Duration>; 4] = Default::default();
    let mut ok = true;
    let mut checked = [false; 4];
    for round in 0..WARM_UP_ROUNDS + requests {
        for k in 0..PROBES.len() {
            let probe = PROBES[(round + k) % PROBES.len()];
            let (took, first_path, count) = match probe {
                Probe::FerryFirst | Probe::FerryDeep => {
                    let url = if probe == Probe::FerryFirst { &first_url } else { &deep_url };
                    let started = Instant::now();
                    let res = app.http.get(url).bearer_auth(&owner.token).send().await?;
                    let status = res.status();
                    let bytes = res.bytes().await?;
                    let took = started.elapsed();
                    if !status.is_success() {
                        return Err(format!("{url} answered {status}: {}", String::from_utf8_lossy(&bytes)).into());
                    }
                    let page: Value = serde_json::from_slice(&bytes)?;
                    let files = page["files"].as_array().cloned().unwrap_or_default();
                    (took, files.first().and_then(|f| f["path"].as_str().map(str::to_owned)), files.len())
                }
                Probe::RawFirst | Probe::RawDeep => {
                    let after = if probe == Probe::RawFirst { "" } else { before_deep.as_str() };
                    let started = Instant::now();
                    let rows = raw.query(&keyset, &[&project, &after, &"", &no_upper, &(LIMIT + 1)]).await?;
                    let took = started.elapsed();
                    (took, rows.first().map(|r| r.get::<_, String>(0)), rows.len().min(LIMIT as usize))
                }
            };
            let expected = if matches!(probe, Probe::FerryFirst | Probe::RawFirst) { &first } else { &deep_first };
            if !checked[probe as usize] {
                checked[probe as usize] = true;
                if first_path.as_ref() != Some(expected) || count != LIMIT as usize {
                    println!("  {probe:?}: page starts at {first_path:?} with {count} files, expected {expected} and {LIMIT}");
                    ok = false;
                }
            }
            if round >= WARM_UP_ROUNDS {
                samples[probe as usize].push(took);
            }
        }
    }

    let label = |p: Probe| match p {
        Probe::FerryFirst => "ferry GET files-paginated, page 1        ",
        Probe::FerryDeep => "ferry GET files-paginated, cursor at deep",
        Probe::RawFirst => "raw keyset SQL, page 1                   ",
        Probe::RawDeep => "raw keyset SQL, after deep cursor        ",
    };
    let mut p50 = [Duration::ZERO; 4];
    let mut p99 = [Duration::ZERO; 4];
    for probe in PROBES {
        let s = &mut samples[probe as usize];
        s.sort();
        p50[probe as usize] = common::quantile(s, 0.5);
        p99[probe as usize] = common::quantile(s, 0.99);
        let mean = s.iter().sum::<Duration>() / s.len() as u32;
        println!(
            "{}: p50 {:.2} ms, p99 {:.2} ms (mean {:.2} ms, max {:.2} ms, {} requests)",
            label(probe),
            common::ms(p50[probe as usize]),
            common::ms(p99[probe as usize]),
            common::ms(mean),
            common::ms(*s.last().unwrap()),
            s.len()
        );
    }
    let (ff, fd) = (Probe::FerryFirst as usize, Probe::FerryDeep as usize);
    println!(
        "deep/page-1 p50: ferry {:.2}, raw {:.2}; ferry p99 {} {:.0} ms at both depths (goal)",
        p50[fd].as_secs_f64() / p50[ff].as_secs_f64(),
        p50[Probe::RawDeep as usize].as_secs_f64() / p50[Probe::RawFirst as usize].as_secs_f64(),
        if p99[ff].max(p99[fd]) < GOAL_P99 { "<" } else { "NOT <" },
        common::ms(GOAL_P99)
    );
    println!(
        "ratio raw/ferry p50: page 1 {:.2}, deep {:.2}",
        p50[Probe::RawFirst as usize].as_secs_f64() / p50[ff].as_secs_f64(),
        p50[Probe::RawDeep as usize].as_secs_f64() / p50[fd].as_secs_f64()
    );
    println!("check: pages start where expected with {LIMIT} files — {}", if ok { "OK" } else { "FAILED" });
    println!("load after: {}", common::load());

    app.stop().await;
    pool.close();
    Ok(ok)
}
