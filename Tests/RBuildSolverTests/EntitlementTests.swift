import RBuildRuntime
import RBuildSolver
import Testing

struct EntitlementTests {
    @Test func networkHostIsKnown() throws {
        #expect(try Entitlement.parse("network.host") == .networkHost)
    }

    @Test("--allow values rbuild does not grant say why", arguments: [
        ("security.insecure", "rbuild never grants it"),
        ("network.bridge", "unknown entitlement (rbuild knows network.host)"),
        ("", "unknown entitlement"),
    ])
    func refused(_ text: String, _ message: String) {
        #expect {
            _ = try Entitlement.parse(text)
        } throws: { error in
            "\(error)".hasPrefix("--allow \(text):") && "\(error)".contains(message)
        }
    }

    @Test func anExecOpsNetworkAndExtraHostsAreInItsDefinition() {
        let graph = Graph()
        let root = graph.add(.source(.scratch))
        func exec(_ network: NetworkMode, _ hosts: [ExtraHost] = []) -> Vertex {
            graph.add(.exec(ExecOp(args: ["true"], env: [], cwd: "/", user: "0", network: network, extraHosts: hosts,
                                   platform: .host)), inputs: [root])
        }
        let digests = Set([exec(.isolated), exec(.none), exec(.host),
                           exec(.isolated, [ExtraHost(name: "a", address: "10.0.0.1")]),
                           exec(.isolated, [ExtraHost(name: "a", address: "10.0.0.2")])].map(\.digest))
        #expect(digests.count == 5)
        #expect(exec(.isolated).description.contains("network=default"))
        #expect(exec(.isolated, [ExtraHost(name: "a", address: "10.0.0.1")]).description.contains("extra-hosts=[\"a:10.0.0.1\"]"))
    }
}
