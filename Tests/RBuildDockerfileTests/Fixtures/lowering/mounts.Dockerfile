# RUN --mount of every type, as `docker init` templates and real Dockerfiles write them.
ARG CACHE_ID=gomod
FROM golang AS build
ARG CACHE_ID
WORKDIR /src
RUN --mount=type=cache,target=/go/pkg/mod,id=${CACHE_ID},sharing=locked \
    --mount=type=bind,source=go.sum,target=go.sum \
    --mount=type=bind,source=go.mod,target=go.mod \
    go mod download -x
RUN --mount=type=cache,target=/root/.cache/go-build,uid=1000,gid=1000,mode=0700 \
    --mount=type=bind,target=. \
    go build -o /bin/server .

FROM debian AS final
RUN --mount=type=secret,id=aws,target=/root/.aws/credentials,required \
    --mount=type=secret,id=token,env=TOKEN \
    --mount=type=ssh \
    --mount=type=tmpfs,target=/scratch,size=64m \
    fetch
RUN --mount=type=bind,from=build,source=/bin/server,target=/server,rw /server --selftest
RUN --mount=type=cache,from=build,source=/src,target=/seed,sharing=private,ro true
