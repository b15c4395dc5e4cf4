import Foundation

/// `1024`, `64k`, `64m`, `1g`, `1.5GiB` (docker's RAM sizes: binary multiples), or nil: not a
/// size, or one past Int64.
package func parseByteSize(_ text: String) -> Int64? {
    let t = text.lowercased().trimmingCharacters(in: .whitespaces)
    let digits = t.prefix { $0.isNumber || $0 == "." }
    guard let n = Double(digits), n >= 0 else { return nil }
    let unit = t.dropFirst(digits.count)
    let shifts: [String: Int64] = ["": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
                                   "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40,
                                   "tib": 1 << 40]
    guard let multiple = shifts[String(unit)] else { return nil }
    let bytes = n * Double(multiple)
    // Int64(Double) traps past Int64.max (9.2e18 rounds up to 2^63 as a Double, hence <).
    guard bytes < Double(Int64.max) else { return nil }
    return Int64(bytes)
}
