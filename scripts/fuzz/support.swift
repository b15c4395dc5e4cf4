// Shared by the libFuzzer entry points (compiled with each by scripts/fuzz/common.sh).
import Foundation

/// Stops the fuzzer with a message: libFuzzer keeps the input as a crash.
func fail(_ message: String) -> Never {
    let program = CommandLine.arguments.first.map { ($0 as NSString).lastPathComponent } ?? "fuzz"
    FileHandle.standardError.write(Data("\(program): \(message)\n".utf8))
    abort()
}

/// A property every input must keep (a round trip, a containment): `fail` when it does not.
func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fail(message()) }
}

/// The input as text (invalid UTF-8 repaired, as the programs read text).
func inputText(_ data: UnsafePointer<UInt8>, _ size: Int) -> String {
    String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
}
