use resilience::retry_with_backoff;

struct Connection {
    host: String,
}

#[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
fn ping(#[no_clone] connection: Connection, attempt: u32) -> std::io::Result<usize> {
    let _ = attempt;
    Ok(connection.host.len())
}

fn main() {
    let connection = Connection {
        host: "example.invalid".to_owned(),
    };
    assert_eq!(ping(connection, 1).unwrap(), 15);
}
