import Foundation
import Testing
@testable import RBuildRuntime
import RBuildSystem

struct ExtraHostTests {
    @Test("--add-host forms docker takes", arguments: [
        ("db:10.0.0.5", "db", "10.0.0.5"),
        ("db=10.0.0.5", "db", "10.0.0.5"),
        ("v6:::1", "v6", "::1"),
        ("v6=[fd00::1]", "v6", "fd00::1"),
        ("v6:[fd00::1]", "v6", "fd00::1"),
        ("my.host.example:192.168.1.2", "my.host.example", "192.168.1.2"),
    ])
    func parses(_ text: String, _ name: String, _ address: String) throws {
        let h = try ExtraHost.parse(text)
        #expect(h == ExtraHost(name: name, address: address))
        #expect(try ExtraHost.parse(h.description) == h)
    }

    @Test("bad --add-host values say why", arguments: [
        ("db", "expected NAME:IP"),
        (":10.0.0.5", "the host name must be non-empty"),
        ("two words:10.0.0.5", "without spaces"),
        ("db:", "is not an IPv4 or IPv6 address"),
        ("db:example.com", "'example.com' is not an IPv4 or IPv6 address"),
        ("db:10.0.0.256", "is not an IPv4 or IPv6 address"),
        ("gw:host-gateway", "host-gateway is not supported"),
    ])
    func refuses(_ text: String, _ message: String) {
        #expect {
            _ = try ExtraHost.parse(text)
        } throws: { error in
            "\(error)".contains(message) && "\(error)".contains("--add-host \(text)")
        }
    }
}

struct EtcFilesTests {
    @Test func hostsListsExtraHostsAfterTheSandboxsOwnNames() {
        let text = EtcFiles.hosts(hostname: "buildkitsandbox",
                                  extraHosts: [ExtraHost(name: "db", address: "10.0.0.5"), ExtraHost(name: "v6", address: "fd00::1")])
        #expect(text == "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tbuildkitsandbox\n"
                + "10.0.0.5\tdb\nfd00::1\tv6\n")
    }

    static let stubHost = """
        # This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).
        nameserver 127.0.0.53
        options edns0 trust-ad
        search corp.example
        """
    static let upstream = """
        nameserver 10.1.1.1
        nameserver 127.0.0.1
        nameserver 8.8.8.8
        nameserver fd00::53
        search corp.example lab.example
        """

    @Test func slirp4netnsNamesOnlyItsForwarderAndKeepsSearchAndOptions() {
        let text = EtcFiles.resolvConf(network: .isolated, helper: .slirp4netns, host: Self.stubHost)
        let lines = text.split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(lines == ["nameserver 10.0.2.3", "options edns0 trust-ad", "search corp.example"])
    }

    @Test func pastaNamesItsForwarderThenTheHostsNonLoopbackServersAtMostThree() {
        let text = EtcFiles.resolvConf(network: .isolated, helper: .pasta, host: Self.upstream)
        let lines = text.split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(lines == ["nameserver 169.254.1.1", "nameserver 10.1.1.1", "nameserver 8.8.8.8",
                          "search corp.example lab.example"])
        // A host whose only resolver is its own loopback: the forwarder alone.
        let stub = EtcFiles.resolvConf(network: .isolated, helper: .pasta, host: Self.stubHost)
        #expect(stub.split(separator: "\n").filter { $0.hasPrefix("nameserver") } == ["nameserver 169.254.1.1"])
    }

    @Test func hostNetworkKeepsTheHostsFileAndNoneHasNoServer() {
        #expect(EtcFiles.resolvConf(network: .host, helper: nil, host: Self.upstream) == Self.upstream)
        #expect(!EtcFiles.resolvConf(network: .none, helper: nil, host: Self.upstream).contains("nameserver"))
    }

    @Test(arguments: ["127.0.0.53", "127.0.0.1", "::1", "0.0.0.0", "::ffff:127.0.0.1"])
    func loopbackAddresses(_ address: String) {
        #expect(EtcFiles.isLoopback(address))
    }

    @Test(arguments: ["10.0.2.3", "8.8.8.8", "fd00::1", "128.0.0.1"])
    func otherAddresses(_ address: String) {
        #expect(!EtcFiles.isLoopback(address))
    }
}

struct NetworkHelperChoiceTests {
    /// A `locate` that finds only these programs.
    func installed(_ names: String...) -> (String) -> String? {
        { name in names.contains(name) ? "/usr/bin/" + name : nil }
    }

    /// A device that opens for reading and writing (a regular file stands in for /dev/net/tun).
    func openableDevice() throws -> String {
        let path = NSTemporaryDirectory() + "rbuild-tun-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        return path
    }

    @Test func slirp4netnsIsPreferredAndPastaIsTheFallback() throws {
        let tun = try openableDevice()
        defer { unlink(tun) }
        let both = try NetworkHelper.find(force: nil, locate: installed("slirp4netns", "pasta"), tunDevice: tun).get()
        #expect(both.kind == .slirp4netns && both.path == "/usr/bin/slirp4netns")
        let pasta = try NetworkHelper.find(force: nil, locate: installed("pasta"), tunDevice: tun).get()
        #expect(pasta.kind == .pasta)
    }

    @Test func theEnvironmentForcesOne() throws {
        let tun = try openableDevice()
        defer { unlink(tun) }
        let forced = try NetworkHelper.find(force: "pasta", locate: installed("slirp4netns", "pasta"), tunDevice: tun).get()
        #expect(forced.kind == .pasta)
        let missing = NetworkHelper.find(force: "pasta", locate: installed("slirp4netns"), tunDevice: tun)
        #expect(message(missing).contains("RBUILD_NETWORK_HELPER=pasta, but pasta is not installed: apt install passt"))
        let bogus = NetworkHelper.find(force: "vpnkit", locate: installed("slirp4netns"), tunDevice: tun)
        #expect(message(bogus).contains("RBUILD_NETWORK_HELPER=vpnkit: expected slirp4netns or pasta"))
    }

    @Test func withoutAHelperTheMessageNamesBothPackagesAndTheFallback() throws {
        let tun = try openableDevice()
        defer { unlink(tun) }
        let text = message(NetworkHelper.find(force: nil, locate: installed(), tunDevice: tun))
        #expect(text.contains("apt install slirp4netns") && text.contains("passt"), "\(text)")
        #expect(text.contains("--network host --allow network.host"), "\(text)")
    }

    @Test func anUnusableTunDeviceSaysWhatToDo() throws {
        let missing = message(NetworkHelper.find(force: nil, locate: installed("slirp4netns"), tunDevice: "/nonexistent/tun"))
        #expect(missing.contains("modprobe tun") && missing.contains("--network host --allow network.host"), "\(missing)")
        // A directory cannot be opened for writing, whoever runs the tests (root included).
        let dir = NSTemporaryDirectory()
        let denied = message(NetworkHelper.find(force: nil, locate: installed("slirp4netns"), tunDevice: dir))
        #expect(denied.contains("slirp4netns cannot open \(dir)") && denied.contains("chmod 0666 \(dir)"), "\(denied)")
    }

    @Test func argumentsKeepTheHostLoopbackOut() {
        let slirp = NetworkHelper(kind: .slirp4netns, path: "/usr/bin/slirp4netns").arguments(pid: 42, readyPath: "", uid: 0, gid: 0)
        #expect(slirp.contains("--disable-host-loopback") && slirp.contains("--ready-fd=3") && slirp.contains("--exit-fd=4"))
        #expect(slirp.suffix(2) == ["42", "tap0"])
        let pasta = NetworkHelper(kind: .pasta, path: "/usr/bin/pasta").arguments(pid: 42, readyPath: "/s/ready", uid: 1000, gid: 100)
        let joined = pasta.joined(separator: " ")
        for part in ["--foreground", "--ipv4-only", "--tcp-ns none", "--udp-ns none", "--tcp-ports none", "--udp-ports none", "--no-map-gw",
                     "--dns-forward 169.254.1.1", "--runas 1000:100", "--pid /s/ready"] {
            #expect(joined.contains(part), "\(part)")
        }
        #expect(pasta.last == "42")
    }

    func message(_ r: Result<NetworkHelper, RuntimeError>) -> String {
        if case .failure(let e) = r { return e.message }
        return "(found \(String(describing: try? r.get())))"
    }
}
