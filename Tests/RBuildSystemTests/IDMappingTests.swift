import Testing
@testable import RBuildSystem

struct IDMappingTests {
    let text = """
    alice:100000:65536
    1001:200000:1000
    # comment
    bob:300000:0
    carol:400000:70000
    """

    @Test func findsTheUsersRangeByNameOrUid() {
        #expect(IDMapping.parseSubordinate(text: text, name: "alice", id: 1000) == SubordinateRange(start: 100000, count: 65535))
        #expect(IDMapping.parseSubordinate(text: text, name: "dave", id: 1001) == SubordinateRange(start: 200000, count: 1000))
        #expect(IDMapping.parseSubordinate(text: text, name: "bob", id: 1002) == nil, "an empty range is no range")
        #expect(IDMapping.parseSubordinate(text: text, name: "carol", id: 1003)?.count == 65535, "capped at 65535")
        #expect(IDMapping.parseSubordinate(text: text, name: "erin", id: 1004) == nil)
    }

    @Test func mapLines() {
        var m = IDMapping(mode: .single, hostUID: 1000, hostGID: 1001, reason: "")
        #expect(m.mapLines(forUIDs: true).map { [$0.inside, $0.outside, $0.count] } == [[0, 1000, 1]])
        #expect(m.mapLines(forUIDs: false).map { [$0.inside, $0.outside, $0.count] } == [[0, 1001, 1]])
        #expect(m.maxInsideUID == 0)
        m.mode = .subordinate
        m.uidRange = SubordinateRange(start: 100000, count: 65535)
        m.gidRange = SubordinateRange(start: 200000, count: 65535)
        #expect(m.mapLines(forUIDs: true).map { [$0.inside, $0.outside, $0.count] } == [[0, 1000, 1], [1, 100000, 65535]])
        #expect(m.mapLines(forUIDs: false).map { [$0.inside, $0.outside, $0.count] } == [[0, 1001, 1], [1, 200000, 65535]])
        #expect(m.maxInsideUID == 65535)
    }

    @Test func detectWithoutRangeIsSingle() {
        let m = IDMapping.detect(force: .single, subuidPath: "/nonexistent", subgidPath: "/nonexistent")
        #expect(m.mode == .single || m.mode == .root)
    }
}

struct KernelVersionTests {
    @Test(arguments: [("6.18.44-fc-v657", 6, 18), ("5.10.0-28-amd64", 5, 10), ("4.19", 4, 19)])
    func parses(_ release: String, _ major: Int, _ minor: Int) {
        #expect(KernelVersion(release: release) == KernelVersion(major, minor))
    }

    @Test func compares() {
        #expect(KernelVersion(5, 12) < KernelVersion(6, 7))
        #expect(KernelVersion(6, 7) < KernelVersion(6, 18))
        #expect(!(KernelVersion(6, 18) < KernelVersion(6, 7)))
    }
}
