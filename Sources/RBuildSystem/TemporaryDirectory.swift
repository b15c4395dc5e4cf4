#if canImport(Glibc)
import Glibc
#endif

/// mkdtemp(3) of `prefix` + "XXXXXX": a new private (0700) directory's path, or nil (errno set).
public func makeTemporaryDirectory(prefix: String) -> String? {
    var template = Array((prefix + "XXXXXX").utf8CString)
    return template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) }
}

/// A new empty directory `<parent>/<prefix>XXXXXX`; `parent` must exist.
public func makeTemporaryDirectory(in parent: String, prefix: String) throws -> String {
    guard let p = makeTemporaryDirectory(prefix: parent + "/" + prefix) else {
        throw SystemError("mkdtemp", path: parent + "/" + prefix + "XXXXXX")
    }
    return p
}
