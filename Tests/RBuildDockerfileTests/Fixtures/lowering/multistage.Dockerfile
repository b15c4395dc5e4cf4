# A Go-style build: a builder stage on the build platform, a small final image.
ARG GO=1.22
FROM --platform=$BUILDPLATFORM golang:${GO} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETARCH
RUN GOARCH=$TARGETARCH go build -o /out/app .

FROM busybox
LABEL org.opencontainers.image.version=1.2.3
COPY --from=build --chmod=0755 /out/app /usr/local/bin/app
USER 1000:1000
EXPOSE 8080
CMD ["app"]
