//! The build script: `embed_migrations!` (src/store/migrate.rs) reads the
//! migrations folder when the crate compiles, and cargo tracks the files it
//! found, not the folder, so a new migration would not be compiled in until
//! something else changed. Watching the folder makes any change to it
//! rebuild the crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
