import Foundation
import Testing
import RBuildSystem

struct RFC3339Tests {
    @Test(arguments: [
        (Int64(0), "1970-01-01T00:00:00Z"),
        (Int64(1_700_000_000), "2023-11-14T22:13:20Z"),
        (Int64(951_782_400), "2000-02-29T00:00:00Z"),
        (Int64(-62_135_596_800), "0001-01-01T00:00:00Z"),
        (Int64(253_402_300_799), "9999-12-31T23:59:59Z"),
    ])
    func writesWholeSeconds(seconds: Int64, text: String) {
        #expect(RFC3339.format(seconds: seconds) == text)
        #expect(RFC3339.format(Date(timeIntervalSince1970: TimeInterval(seconds))) == text)
        #expect(RFC3339.parse(text) == Date(timeIntervalSince1970: TimeInterval(seconds)))
    }

    /// The same text as ISO8601DateFormatter (which rbuild used before) for whole seconds.
    @Test func matchesFoundationsFormatter() {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        f.timeZone = TimeZone(identifier: "UTC")
        for s in stride(from: Int64(-2_000_000_000), to: 5_000_000_000, by: 9_876_543) {
            let d = Date(timeIntervalSince1970: TimeInterval(s))
            #expect(RFC3339.format(d) == f.string(from: d))
        }
    }

    @Test func millisecondsAreTruncated() {
        #expect(RFC3339.format(Date(timeIntervalSince1970: 1_700_000_000.9995), milliseconds: true) == "2023-11-14T22:13:20.999Z")
        #expect(RFC3339.format(Date(timeIntervalSince1970: 1_700_000_000.25), milliseconds: true) == "2023-11-14T22:13:20.250Z")
        #expect(RFC3339.format(Date(timeIntervalSince1970: -0.5), milliseconds: true) == "1969-12-31T23:59:59.500Z")
    }

    @Test(arguments: [
        ("2024-01-02T03:04:05.5Z", 1_704_164_645.5),
        ("2024-01-02T03:04:05.123456Z", 1_704_164_645.123456),
        ("2024-01-02T03:04:05+02:00", 1_704_157_445.0),
        ("2024-01-02t03:04:05-00:30", 1_704_166_445.0),
    ])
    func readsFractionsAndOffsets(text: String, seconds: Double) throws {
        let d = try #require(RFC3339.parse(text))
        #expect(abs(d.timeIntervalSince1970 - seconds) < 1e-6)
    }

    @Test(arguments: ["", "2024-01-02", "2024-01-02T03:04:05", "2024-13-02T03:04:05Z", "2024-01-02T03:04:05.Z",
                      "2024-01-02T03:04:05Zjunk", "2024-01-02T03:04:05+0200", "24-01-02T03:04:05Z"])
    func rejectsOtherText(text: String) {
        #expect(RFC3339.parse(text) == nil)
    }
}
