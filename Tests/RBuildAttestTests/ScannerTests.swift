import CSQLite
import Foundation
import Testing
@testable import RBuildAttest
import RBuildOCI
import RBuildSnapshots

/// The package scanners on small roots shaped as the real databases are.
struct ScannerTests {
    func root(_ files: [String: String]) throws -> String {
        let dir = NSTemporaryDirectory() + "rbuild-scan-\(UInt32.random(in: 0...UInt32.max))"
        for (path, text) in files {
            let full = dir + "/" + path
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: full, atomically: false, encoding: .utf8)
        }
        return dir
    }

    @Test func dpkgStatusInstalledOnly() throws {
        let dir = try root([
            "etc/os-release": "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
            "var/lib/dpkg/status": """
                Package: jq
                Status: install ok installed
                Priority: optional
                Architecture: amd64
                Source: jq (1.6-2.1)
                Version: 1.6-2.1
                Description: lightweight and flexible command-line JSON processor
                 jq is like sed for JSON data

                Package: removed-one
                Status: deinstall ok config-files
                Architecture: amd64
                Version: 1.0

                Package: libc6
                Status: install ok installed
                Architecture: amd64
                Version: 2.36-9+deb12u4

                """,
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (found, distro) = PackageScanner.scan(SnapshotView(directory: dir))
        #expect(distro == "debian")
        #expect(found.map(\.name) == ["jq", "libc6"])
        #expect(found[0].source == "jq" && found[0].version == "1.6-2.1")
        #expect(found[0].purl(distribution: distro) == "pkg:deb/debian/jq@1.6-2.1?arch=amd64")
        #expect(found[1].purl(distribution: distro) == "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64" || found[1].purl(distribution: distro) == "pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64")
    }

    @Test func apkInstalledDatabase() throws {
        let dir = try root(["lib/apk/db/installed": """
            C:Q1abc=
            P:musl
            V:1.2.4-r2
            A:x86_64
            L:MIT
            o:musl

            C:Q1def=
            P:busybox
            V:1.36.1-r15
            A:x86_64
            L:GPL-2.0-only
            o:busybox

            """, "etc/os-release": "ID=alpine\n"])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (found, distro) = PackageScanner.scan(SnapshotView(directory: dir))
        #expect(found.map(\.name) == ["busybox", "musl"])
        #expect(found[1].license == "MIT" && found[1].purl(distribution: distro) == "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64")
    }

    @Test func pythonAndNodePackagesAnywhere() throws {
        let dir = try root([
            "usr/lib/python3/dist-packages/requests-2.28.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: requests\nVersion: 2.28.1\nLicense: Apache 2.0\n\nbody\n",
            "app/venv/lib/python3.11/site-packages/Flask_Login-0.6.dist-info/METADATA": "Name: Flask_Login\nVersion: 0.6.3\n",
            "app/node_modules/left-pad/package.json": "{\"name\": \"left-pad\", \"version\": \"1.3.0\", \"license\": \"WTFPL\"}",
            "app/node_modules/@scope/thing/package.json": "{\"name\": \"@scope/thing\", \"version\": \"2.0.0\"}",
            "app/package.json": "{\"name\": \"the-app\", \"version\": \"0.0.1\"}",
            "proc/ignored.dist-info/METADATA": "Name: no\nVersion: 1\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (found, _) = PackageScanner.scan(SnapshotView(directory: dir))
        #expect(Set(found.map(\.name)) == ["requests", "Flask_Login", "left-pad", "@scope/thing"])
        #expect(found.first { $0.name == "Flask_Login" }?.purl(distribution: nil) == "pkg:pypi/flask-login@0.6.3")
        #expect(found.first { $0.name == "@scope/thing" }?.purl(distribution: nil) == "pkg:npm/%40scope/thing@2.0.0")
    }

    /// An rpm header blob as rpmdb.sqlite stores it, made here field by field.
    func rpmBlob(_ strings: [(Int32, String)], epoch: Int32?) -> [UInt8] {
        var entries: [UInt8] = [], data: [UInt8] = []
        func be(_ v: Int32) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }
        var count: Int32 = 0
        for (tag, s) in strings {
            entries += be(tag) + be(6) + be(Int32(data.count)) + be(1)
            data += Array(s.utf8) + [0]
            count += 1
        }
        if let epoch {
            while data.count % 4 != 0 { data.append(0) }
            entries += be(1003) + be(4) + be(Int32(data.count)) + be(1)
            data += be(epoch)
            count += 1
        }
        return be(count) + be(Int32(data.count)) + entries + data
    }

    @Test func rpmSQLiteDatabase() throws {
        let dir = try root(["etc/os-release": "ID=\"rocky\"\n"])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/var/lib/rpm", withIntermediateDirectories: true)
        var db: OpaquePointer?
        #expect(sqlite3_open(dir + "/var/lib/rpm/rpmdb.sqlite", &db) == SQLITE_OK)
        sqlite3_exec(db, "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)", nil, nil, nil)
        let blobs = [rpmBlob([(1000, "bash"), (1001, "5.1.8"), (1002, "6.el9"), (1022, "x86_64"), (1014, "GPLv3+")], epoch: nil),
                     rpmBlob([(1000, "openssl-libs"), (1001, "3.0.7"), (1002, "25.el9"), (1022, "x86_64")], epoch: 1)]
        for blob in blobs {
            var stmt: OpaquePointer?
            sqlite3_prepare_v2(db, "INSERT INTO Packages (blob) VALUES (?)", -1, &stmt, nil)
            _ = blob.withUnsafeBytes { sqlite3_bind_blob(stmt, 1, $0.baseAddress, Int32($0.count), nil) }
            sqlite3_step(stmt)
            sqlite3_finalize(stmt)
        }
        sqlite3_close(db)
        let (found, distro) = PackageScanner.scan(SnapshotView(directory: dir))
        #expect(found.map(\.name) == ["bash", "openssl-libs"])
        #expect(found[0].version == "5.1.8-6.el9" && found[0].license == "GPLv3+")
        #expect(found[1].version == "1:3.0.7-25.el9")
        #expect(found[1].purl(distribution: distro) == "pkg:rpm/rocky/openssl-libs@1%3A3.0.7-25.el9?arch=x86_64")
        #expect(RPMHeader(blob: [0, 0, 0, 9, 0, 0, 0, 0]) == nil, "a truncated header is refused")
    }

    /// An image's database that is a symlink out of the root, or a FIFO, is never followed or read.
    @Test func hostileDatabasesAreNotFollowed() throws {
        let dir = try root(["etc/os-release": "ID=debian\n"])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/var/lib/dpkg", withIntermediateDirectories: true)
        let outside = dir + "-outside"
        try "Package: leaked\nStatus: install ok installed\nVersion: 1\n".write(toFile: outside, atomically: false, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: outside) }
        try FileManager.default.createSymbolicLink(atPath: dir + "/var/lib/dpkg/status", withDestinationPath: outside)
        mkfifo(dir + "/var/lib/rpm-fifo", 0o600)
        try FileManager.default.createDirectory(atPath: dir + "/lib/apk/db", withIntermediateDirectories: true)
        mkfifo(dir + "/lib/apk/db/installed", 0o600)
        let (found, _) = PackageScanner.scan(SnapshotView(directory: dir))
        #expect(found.isEmpty, "\(found)")
    }

    @Test func spdxDocumentIsStable() throws {
        let p = [FoundPackage(kind: .deb, name: "jq", version: "1.6", architecture: "amd64", location: "/var/lib/dpkg/status")]
        let a = try SPDX.document(name: "x", packages: p, distribution: "debian", created: 1_700_000_000, tool: "rbuild-test")
        let b = try SPDX.document(name: "x", packages: p, distribution: "debian", created: 1_700_000_000, tool: "rbuild-test")
        #expect(a == b)
        let doc = try JSONSerialization.jsonObject(with: Data(a)) as? [String: Any]
        #expect(doc?["spdxVersion"] as? String == "SPDX-2.3")
        #expect((doc?["creationInfo"] as? [String: Any])?["created"] as? String == "2023-11-14T22:13:20Z")
    }
}
