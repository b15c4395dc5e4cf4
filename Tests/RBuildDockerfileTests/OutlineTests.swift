import Foundation
import Testing
@testable import RBuildDockerfile

/// `--call outline` and `--call targets`, as BuildKit answers them.
struct OutlineTests {
    let text = """
        # VERSION the version to build
        ARG VERSION=1.0
        ARG UNUSED=x
        ARG BASE=busybox

        # base is the common base
        FROM ${BASE} AS base
        # MODE how to build
        ARG MODE=fast
        ARG TARGETARCH
        RUN --mount=type=secret,id=token,required=true true

        FROM busybox AS other
        RUN --mount=type=secret,id=never true

        # app builds the app
        FROM base AS app
        ARG VERSION
        COPY --from=other / /o
        RUN --mount=type=ssh --mount=type=secret,id=token echo $VERSION
        """

    @Test func targetsTakeTheCommentAboveFrom() throws {
        let targets = try Dockerfile.parse(text).definition().targets()
        #expect(targets.map(\.name) == ["base", "other", "app"])
        #expect(targets.map(\.description) == ["is the common base", "", "builds the app"])
        #expect(targets.map(\.isDefault) == [false, false, true])
    }

    @Test func outlineListsWhatTheTargetReaches() throws {
        let o = try Dockerfile.parse(text).definition().outline(target: nil, buildArgs: ["MODE": "slow"])
        #expect(o.target == "app" && o.description == "builds the app")
        // Global args only when a reached FROM uses them or a stage declares them; automatic ones never.
        #expect(o.args.map(\.name) == ["BASE", "MODE", "VERSION"])
        #expect(o.args.map(\.value) == ["busybox", "slow", "1.0"])
        #expect(o.args.map(\.description) == ["", "how to build", "the version to build"])
        #expect(o.secrets == [.init(id: "token", required: true), .init(id: "never", required: false)])
        #expect(o.ssh == [.init(id: "default", required: false)])
    }

    @Test func outlineOfAnEarlierTarget() throws {
        let o = try Dockerfile.parse(text).definition().outline(target: "other")
        #expect(o.args.isEmpty)
        #expect(o.secrets.map(\.id) == ["never"])
        #expect(throws: DockerfileError.self) { try Dockerfile.parse(text).definition().outline(target: "nope") }
    }
}
