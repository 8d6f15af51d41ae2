use resilience::retry_with_backoff;

struct Cache {
    entries: Vec<String>,
}

impl Cache {
    #[retry_with_backoff]
    fn last_mut(&mut self) -> Result<&mut String, std::io::Error> {
        self.entries
            .last_mut()
            .ok_or_else(|| std::io::Error::other("connection reset"))
    }
}

fn main() {}
