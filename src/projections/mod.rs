//! The registry of read models. Each is one file `projections/<name>.sql`:
//! its tables, then a line `-- apply`, then set-based SQL that applies a
//! batch of events found in the relation `new_events` (the columns of the
//! logs). The same SQL runs live, inside one statement trigger per log, and
//! during a rebuild, over the whole log in batches. Apply SQL must therefore
//! be correct for any contiguous run of a project's events, not just one.
//!
//! Apply SQL is a list of statements, each ending with `;` at the end of a
//! line, and each reading only events of the types it names (`'type'`): the
//! live trigger runs a statement only for a batch holding one of them. A
//! statement with a line `-- replan` is planned at each live run (see
//! [`ApplyStatement::replan`]).
//!
//! A file may end with a line `-- build` and SQL filling its empty tables
//! from the whole log at once (`new_events` is then every event), which a
//! rebuild runs instead of the apply SQL: it runs with the tables' primary
//! keys and unique constraints taken off (made again after it, in one sorted
//! build each), so it inserts each row once, with no upsert.

mod rebuild;

use crate::protocol::{EventType, Log};

pub use rebuild::{ensure_up_to_date, rebuild, status, ProjectionStatus, RebuildReport};

/// One read model, compiled into the binary.
#[derive(Debug)]
pub struct Projection {
    pub name: &'static str,
    source: &'static str,
}

const APPLY_MARKER: &str = "\n-- apply\n";
const BUILD_MARKER: &str = "\n-- build\n";
/// Bump when `rebuild::triggers_sql` changes, so live triggers are remade.
const TRIGGER_FORMAT: &str = "4";

impl Projection {
    const fn new(name: &'static str, source: &'static str) -> Self {
        Self { name, source }
    }

    /// The hash of the file (and of how its trigger is made): a changed
    /// file is a new version to rebuild.
    pub fn version(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(TRIGGER_FORMAT.as_bytes());
        hasher.update(self.source.as_bytes());
        hasher.finalize().to_hex()[..16].to_owned()
    }

    /// The DDL creating its tables (unqualified names).
    pub fn tables_sql(&self) -> &'static str {
        self.sections().0
    }

    /// The SQL applying `new_events` to its tables.
    pub fn apply_sql(&self) -> &'static str {
        self.sections().1
    }

    /// The SQL filling its empty, keyless tables from the whole log, if the
    /// file has a `-- build` section.
    pub fn build_sql(&self) -> Option<&'static str> {
        self.sections().2
    }

    fn sections(&self) -> (&'static str, &'static str, Option<&'static str>) {
        let (tables, rest) = self
            .source
            .split_once(APPLY_MARKER)
            .unwrap_or_else(|| panic!("projections/{}.sql has no `-- apply` line", self.name));
        match rest.split_once(BUILD_MARKER) {
            Some((apply, build)) => (tables, apply, Some(build)),
            None => (tables, rest, None),
        }
    }

    /// The event types its apply SQL reads (named there as `'type'`).
    pub fn event_types(&self) -> Vec<EventType> {
        types_named(self.apply_sql())
    }

    /// Its apply SQL a statement at a time (each ending with `;` at the end
    /// of a line).
    pub fn apply_statements(&self) -> impl Iterator<Item = ApplyStatement> {
        let is_sql = |line: &str| !line.trim().is_empty() && !line.trim_start().starts_with("--");
        self.apply_sql().split_inclusive(";\n").filter(move |sql| sql.lines().any(is_sql)).map(|sql| ApplyStatement {
            sql,
            types: types_named(sql),
            replan: sql.lines().any(|line| line.trim_start().starts_with(REPLAN_MARKER)),
        })
    }

    /// The logs holding those types: only their triggers apply it.
    pub fn logs(&self) -> Vec<Log> {
        let types = self.event_types();
        [Log::Project, Log::Transfer].into_iter().filter(|l| types.iter().any(|t| t.log() == *l)).collect()
    }

    /// The tables the projection owns, in the order its file creates them.
    pub fn tables(&self) -> Vec<&'static str> {
        self.tables_sql()
            .lines()
            .filter_map(|line| line.trim().strip_prefix("CREATE TABLE "))
            .filter_map(|rest| rest.split(|c: char| c.is_whitespace() || c == '(').next())
            .collect()
    }
}

/// One statement of a projection's apply SQL, as the live trigger runs it.
#[derive(Debug)]
pub struct ApplyStatement {
    pub sql: &'static str,
    /// The event types it names: it reads only events of those types, so
    /// the live trigger runs it only for a batch holding one of them.
    pub types: Vec<EventType>,
    /// Marked `-- replan`: the live trigger plans it at every run instead of
    /// keeping a session's first plan, made when the tables may have been
    /// far smaller (a plan is made again only when a table is analysed).
    pub replan: bool,
}

const REPLAN_MARKER: &str = "-- replan";

/// The event types `sql` names, as `'type'`.
fn types_named(sql: &str) -> Vec<EventType> {
    EventType::ALL.iter().copied().filter(|t| sql.contains(&format!("'{}'", t.as_str()))).collect()
}

/// Every projection, in the order they are built and applied.
pub static ALL: &[Projection] = &[
    Projection::new("projects", include_str!("../../projections/projects.sql")),
    Projection::new("project_members", include_str!("../../projections/project_members.sql")),
    Projection::new("project_invites", include_str!("../../projections/project_invites.sql")),
    Projection::new("project_devices", include_str!("../../projections/project_devices.sql")),
    Projection::new("remote_files", include_str!("../../projections/remote_files.sql")),
    Projection::new("file_transfers", include_str!("../../projections/file_transfers.sql")),
    Projection::new("file_chunks", include_str!("../../projections/file_chunks.sql")),
];

pub fn find(name: &str) -> Option<&'static Projection> {
    ALL.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_projection_file_is_well_formed() {
        for p in ALL {
            assert!(!p.tables().is_empty(), "{} creates no table", p.name);
            assert!(p.apply_sql().contains("new_events"), "{} never reads new_events", p.name);
            assert!(p.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{} is not a plain identifier", p.name);
            assert_eq!(p.version().len(), 16);
            assert!(!p.event_types().is_empty(), "{} reads no event type", p.name);
            for statement in p.apply_statements() {
                assert!(!statement.types.is_empty(), "a statement of {} names no event type:\n{statement:?}", p.name);
                assert!(!statement.sql.contains("$apply$"), "{} uses the trigger's quote", p.name);
            }
        }
        assert_eq!(find("projects").unwrap().tables(), vec!["projects"]);
        assert!(find("projects").unwrap().build_sql().is_none());
        let remote_files = find("remote_files").unwrap();
        let build = remote_files.build_sql().expect("remote_files has a build section");
        assert!(build.contains("new_events") && !build.contains("ON CONFLICT"));
        assert!(!remote_files.apply_sql().contains("-- build"), "the build SQL is not applied live");
        let file_chunks = find("file_chunks").unwrap();
        let build = file_chunks.build_sql().expect("file_chunks has a build section");
        assert!(build.contains("new_events") && !build.contains("DELETE"));
        assert!(!file_chunks.apply_sql().contains("-- build"));
        assert_eq!(find("file_transfers").unwrap().logs(), vec![Log::Transfer]);
        assert_eq!(find("remote_files").unwrap().logs(), vec![Log::Project]);
        assert_eq!(
            find("project_invites").unwrap().event_types(),
            vec![EventType::InviteCreated, EventType::InviteRevoked, EventType::MemberJoined]
        );
    }
}
