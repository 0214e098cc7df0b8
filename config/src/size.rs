//! Human byte sizes ("1000MiB", "64k", "1048576").

/// Parses a byte size: a whole number with an optional unit
/// (`B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`, `G`/`GB`/`GiB`, case-insensitive).
/// Units are binary (1 K = 1024 bytes), as nginx's `client_max_body_size`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| format!("expected a size such as \"1000MiB\", got {text:?}"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {text:?}; use B, KiB, MiB or GiB")),
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn units_are_binary() {
        assert_eq!(parse_size("1000MiB"), Ok(1000 * 1024 * 1024));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("12"), Ok(12));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
    }

    #[test]
    fn garbage_is_explained() {
        assert!(parse_size("lots").unwrap_err().contains("expected a size"));
        assert!(parse_size("5 parsecs").unwrap_err().contains("unknown size unit"));
    }
}
