import Foundation
import RBuildSolver
import Testing
@testable import RBuildDockerfile

struct RunMountFlagTests {
    func parse(_ text: String, _ vars: [String: String] = [:]) throws -> RunMountFlag {
        try RunMountFlag.parse(text) { word in
            vars.reduce(word) { $0.replacingOccurrences(of: "$" + $1.key, with: $1.value) }
        }
    }

    @Test("each type's keys, with buildx's aliases and flag forms") func keys() throws {
        let cache = try parse("type=cache,dst=/root/.cache,id=pip,sharing=locked,mode=0700,uid=1000,gid=100,ro")
        #expect(cache.type == .cache && cache.target == "/root/.cache" && cache.id == "pip" && cache.sharing == .locked)
        #expect(cache.mode == 0o700 && cache.uid == 1000 && cache.gid == 100 && cache.readOnly == true)
        let bind = try parse("target=/src,src=app,from=build,rw=true")
        #expect(bind.type == .bind && bind.source == "app" && bind.from == "build" && bind.readOnly == false)
        #expect(try parse("type=bind,target=/x,readonly=false").readOnly == false)
        let secret = try parse("type=secret,id=aws,env=AWS,required=true,mode=0440")
        #expect(secret.id == "aws" && secret.env == "AWS" && secret.required == true && secret.mode == 0o440)
        #expect(try parse("type=tmpfs,target=/t,size=64m").size == 64 << 20)
        #expect(try parse("type=ssh").type == .ssh)
        #expect(try parse("type=cache,target=$DIR", ["DIR": "/c"]).target == "/c", "values are expanded")
        #expect(try parse("type=bind,\"source=a,b\",target=/x").source == "a,b", "a quoted field keeps its comma")
    }

    @Test("mistakes are refused with the flag named", arguments: [
        "type=nfs,target=/x", "type=cache", "type=bind,target=/x,sharing=locked", "type=cache,target=/x,sharing=sometimes",
        "type=cache,target=/x,mode=999", "type=cache,target=/x,uid=me", "type=secret", "type=tmpfs,target=/t,size=lots",
        "type=bind,target=/x,colour=blue", "type=bind,target=/x,ro=maybe", "type=bind,\"target=/x",
    ])
    func refused(_ text: String) {
        #expect { try parse(text) } throws: { error in
            (error as? LoweringError)?.description.contains("--mount=\(text)") == true
        }
    }
}

struct RunMountLoweringTests {
    func mounts(_ text: String) throws -> (ExecOp, [Vertex]) {
        let stage = try lowered(text)
        guard case .exec(let e) = stage.root.op else { throw LoweringError("not an exec") }
        return (e, stage.root.inputs)
    }

    @Test("targets, ids and defaults as BuildKit fills them") func defaults() throws {
        let (e, inputs) = try mounts("""
            FROM busybox
            WORKDIR /app
            RUN --mount=type=cache,target=cache --mount=type=secret,id=tok --mount=type=secret,target=/k/key \
                --mount=type=secret,id=e,env=E --mount=type=ssh --mount=type=ssh,id=git --mount=type=bind,target=src true
            """)
        #expect(e.mounts.map(\.target) == ["/app/cache", "/run/secrets/tok", "/k/key", "", "/run/buildkit/ssh_agent.0",
                                           "/run/buildkit/ssh_agent.1", "/app/src"])
        guard case .cache(let c) = e.mounts[0].kind, case .secret(let s) = e.mounts[2].kind,
              case .bind(let input, let source, let rw) = e.mounts[6].kind else {
            Issue.record("kinds")
            return
        }
        #expect(c.id == "/app/cache" && c.sharing == .shared && c.mode == 0o755 && c.uid == nil && !c.readOnly)
        #expect(s.id == "key" && s.owner == MountOwner(mode: 0o400) && !s.required)
        #expect(input == 1 && source == "/" && !rw)
        if case .source(.local(let name, _, _)) = inputs[1].op { #expect(name == "context") } else { Issue.record("context input") }
    }

    @Test("a mount's settings are in the definition; a secret's value never is") func digests() throws {
        let base = try lowered("FROM busybox\nRUN --mount=type=cache,target=/c true\n").root.digest
        #expect(try lowered("FROM busybox\nRUN --mount=type=cache,target=/c,sharing=locked true\n").root.digest != base)
        #expect(try lowered("FROM busybox\nRUN --mount=type=cache,target=/d true\n").root.digest != base)
        #expect(try lowered("FROM busybox\nRUN true\n").root.digest != base)
    }

    @Test("from= names a stage, a named context or an image") func sources() throws {
        let (e, inputs) = try mounts("""
            FROM busybox AS tools
            RUN echo built > /t
            FROM busybox
            RUN --mount=type=bind,from=tools,source=/t,target=/t --mount=type=bind,from=alpine,target=/a --mount=type=cache,from=tools,target=/c true
            """)
        #expect(inputs.count == 3, "tools and alpine once each")
        guard case .bind(let first, _, _) = e.mounts[0].kind, case .bind(let second, _, _) = e.mounts[1].kind,
              case .cache(let c) = e.mounts[2].kind else { Issue.record("kinds"); return }
        #expect(first == 1 && second == 2 && c.from == 1)
        if case .source(.image(let ref, _, _)) = inputs[2].op { #expect(ref == "alpine") } else { Issue.record("image input") }
        #expect(throws: BuildError.self) { try lowered("FROM busybox\nRUN --mount=type=bind,target=/x true\n", context: nil) }
    }
}
