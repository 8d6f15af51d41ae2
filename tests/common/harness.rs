//! For the test binaries with their own `main` (`harness = false`), which cargo still calls
//! as it calls libtest's: `--list` to list them, and `cargo test <filter>`'s filter.

/// Whether the test `name` should not run: listed only (`--list`, printed here), or left out
/// by a filter (one that `name` does not contain).
pub fn skipped(name: &str) -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--list") {
        println!("{name}: test");
        return true;
    }
    let mut filters = args.iter().filter(|arg| !arg.starts_with('-')).peekable();
    filters.peek().is_some() && !filters.any(|filter| name.contains(filter.as_str()))
}
