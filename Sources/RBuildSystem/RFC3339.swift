#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// RFC 3339 times in UTC (image configs, attestations, build records), written and read with
/// gmtime/timegm. Not `ISO8601DateFormatter` nor `Date.ISO8601FormatStyle`: both build a
/// calendar whose time zone lookup loads ICU, megabytes of every build's memory for a string
/// that never depends on a locale or a zone. Dates are proleptic Gregorian, as RFC 3339 has
/// them (ISO8601DateFormatter, which wrote the same text from 1582-10-15 on, went Julian before).
public enum RFC3339 {
    /// `2024-01-02T03:04:05Z`; with `milliseconds`, `2024-01-02T03:04:05.678Z` (truncated, not
    /// rounded: a time is never written as later than it was).
    public static func format(_ date: Date, milliseconds: Bool = false) -> String {
        let t = date.timeIntervalSince1970
        let whole = t.rounded(.down)
        let millis = min(999, Int(((t - whole) * 1000).rounded(.down)))
        return format(seconds: Int64(whole), milliseconds: milliseconds ? millis : nil)
    }

    /// `seconds` since the epoch, with `milliseconds` (0…999) when given.
    public static func format(seconds: Int64, milliseconds: Int? = nil) -> String {
        var t = time_t(seconds)
        var tm = tm()
        guard gmtime_r(&t, &tm) != nil else { return String(seconds) }
        func digits(_ v: Int32, _ n: Int) -> String {
            let s = String(v)
            return s.count >= n ? s : String(repeating: "0", count: n - s.count) + s
        }
        var s = digits(tm.tm_year + 1900, 4) + "-" + digits(tm.tm_mon + 1, 2) + "-" + digits(tm.tm_mday, 2)
            + "T" + digits(tm.tm_hour, 2) + ":" + digits(tm.tm_min, 2) + ":" + digits(tm.tm_sec, 2)
        if let milliseconds { s += "." + digits(Int32(milliseconds), 3) }
        return s + "Z"
    }

    /// `YYYY-MM-DDTHH:MM:SS`, an optional fraction, then `Z` or `±HH:MM`; nil for anything else.
    public static func parse(_ text: String) -> Date? {
        let b = Array(text.utf8)
        var i = 0
        func number(_ n: Int) -> Int32? {
            guard i + n <= b.count else { return nil }
            var v: Int32 = 0
            for c in b[i..<i + n] {
                guard c >= 0x30, c <= 0x39 else { return nil }
                v = v * 10 + Int32(c - 0x30)
            }
            i += n
            return v
        }
        func expect(_ c: UInt8...) -> Bool {
            guard i < b.count, c.contains(b[i]) else { return false }
            i += 1
            return true
        }
        guard let year = number(4), expect(0x2d), let month = number(2), expect(0x2d), let day = number(2),
              expect(0x54, 0x74, 0x20), let hour = number(2), expect(0x3a), let minute = number(2), expect(0x3a),
              let second = number(2),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second <= 60 else { return nil }
        var fraction = 0.0
        if i < b.count, b[i] == 0x2e {
            i += 1
            var scale = 0.1
            let start = i
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
                fraction += Double(b[i] - 0x30) * scale
                scale /= 10
                i += 1
            }
            guard i > start else { return nil }
        }
        var offset = 0
        if expect(0x5a, 0x7a) {
            offset = 0
        } else if i < b.count, b[i] == 0x2b || b[i] == 0x2d {
            let sign = b[i] == 0x2d ? -1 : 1
            i += 1
            guard let h = number(2), expect(0x3a), let m = number(2), h < 24, m < 60 else { return nil }
            offset = sign * (Int(h) * 3600 + Int(m) * 60)
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        var tm = tm()
        tm.tm_year = year - 1900
        tm.tm_mon = month - 1
        tm.tm_mday = day
        tm.tm_hour = hour
        tm.tm_min = minute
        tm.tm_sec = second
        let t = timegm(&tm)
        return Date(timeIntervalSince1970: Double(Int64(t) - Int64(offset)) + fraction)
    }
}
