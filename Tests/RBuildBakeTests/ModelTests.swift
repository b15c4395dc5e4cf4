import RBuildBake
import Testing

@Suite struct BakeModelTests {
    @Test func errorsNameTheirPlace() {
        #expect(BakeError(file: "docker-bake.hcl", line: 3, column: 7, "unexpected }").description == "docker-bake.hcl:3:7: unexpected }")
        #expect(BakeError(file: "compose.yaml", "no services").description == "compose.yaml: no services")
    }
}
