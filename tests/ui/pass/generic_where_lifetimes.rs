use std::fmt::Display;

use resilience::retry_with_backoff;

#[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
fn first<'a, T, E>(items: &'a [T], label: impl Display + Clone) -> Result<&'a T, E>
where
    T: PartialEq + 'a,
    E: std::error::Error + Send + Sync + From<resilience::MediaProcessingError> + 'static,
{
    let _ = label.to_string();
    Ok(&items[0])
}

struct Store<'s> {
    items: &'s [u32],
}

impl<'s> Store<'s> {
    #[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
    fn get(&self, index: usize) -> std::io::Result<&'s u32> {
        self.items
            .get(index)
            .ok_or_else(|| std::io::Error::other("missing"))
    }

    #[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
    fn bump(&mut self, by: &mut u32) -> std::io::Result<u32> {
        *by += 1;
        Ok(*by)
    }
}

fn main() {
    let items = [1, 2, 3];
    let found: Result<&u32, std::io::Error> = first(&items, "label");
    assert_eq!(*found.unwrap(), 1);
    let mut store = Store { items: &items };
    assert_eq!(*store.get(2).unwrap(), 3);
    let mut n = 0;
    assert_eq!(store.bump(&mut n).unwrap(), 1);
}
