//! The typed rule for SQLite through `rusqlite` (feature `rusqlite`).

use rusqlite::ffi::ErrorCode;

use super::Verdict;

/// `SQLITE_BUSY` (another connection holds the write lock: `database is locked`) and
/// `SQLITE_LOCKED` (a conflict inside one shared-cache connection) pass once the other
/// transaction ends: retryable. Every other SQLite result code (a constraint, a corrupt file,
/// a full disk, a read-only database) fails the same way again.
///
/// Set a `busy_timeout` as well: SQLite then waits for the lock itself, and the retry covers
/// what outlasts it. The annotated function must own its whole transaction: a busy error
/// inside a transaction the caller holds (`SQLITE_BUSY_SNAPSHOT` in WAL mode) clears only
/// once that transaction is rolled back, which retrying one statement never does.
pub(crate) fn by_sqlite_code(code: ErrorCode) -> Verdict {
    match code {
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Verdict::Retryable,
        _ => Verdict::NotRetryable,
    }
}

/// A `rusqlite::Error`: a SQLite failure by its code; a conversion's error
/// is left to the error it holds (its `source()`); every other variant (no rows, a wrong
/// column type, a bad parameter name) is a query that will fail the same way again.
pub(crate) fn by_rusqlite(error: &rusqlite::Error) -> Verdict {
    use rusqlite::Error as E;
    match error {
        E::SqliteFailure(failure, _) => by_sqlite_code(failure.code),
        E::FromSqlConversionFailure(..) | E::ToSqlConversionFailure(_) => Verdict::Unknown,
        _ => Verdict::NotRetryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_locked_retry_the_rest_do_not() {
        let failure =
            |code: i32| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        assert_eq!(
            by_rusqlite(&failure(rusqlite::ffi::SQLITE_BUSY)),
            Verdict::Retryable
        );
        assert_eq!(
            by_rusqlite(&failure(rusqlite::ffi::SQLITE_LOCKED)),
            Verdict::Retryable
        );
        assert_eq!(
            by_rusqlite(&failure(rusqlite::ffi::SQLITE_CONSTRAINT)),
            Verdict::NotRetryable
        );
        assert_eq!(
            by_rusqlite(&rusqlite::Error::QueryReturnedNoRows),
            Verdict::NotRetryable
        );
    }
}
