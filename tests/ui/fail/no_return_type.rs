use resilience::retry_with_backoff;

#[retry_with_backoff]
fn fetch() {
    println!("fetching");
}

fn main() {}
