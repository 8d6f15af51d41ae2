use resilience::retry_with_backoff;

#[retry_with_backoff]
fn last_mut(items: &mut Vec<u32>) -> std::io::Result<&mut u32> {
    items.push(1);
    items.last_mut().ok_or_else(|| std::io::Error::other("empty"))
}

fn main() {}
