# walgo image: the static walgo binary plus the Postgres client tools that
# dump-push, dump-restore and copy run (pg_dump, pg_restore, psql).
#
#   docker build -t walgo --build-arg VERSION=$(git describe --tags --always) .
#   docker run --rm -e WALGO_STORAGE=s3://bucket/prefix -e AWS_REGION=eu-west-1 \
#       -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY walgo backup-list
#   docker run --rm -e WALGO_STORAGE=... walgo dump-push "host=db user=app dbname=app"
#
# restore-test and dump-push --from-backup start a private Postgres server,
# so they need the server of the backup's major version too:
#
#   docker build -t walgo-drill --build-arg PG_PACKAGES="postgresql-15" .
#   docker run --rm -e WALGO_STORAGE=... walgo-drill restore-test
#
# It runs as the unprivileged user "walgo" (uid 10001): Postgres refuses root.
# Settings come from WALGO_* variables or --config FILE (mount it).

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# cmd/walgo/static_test.go runs this exact command and checks the result is
# statically linked: keep it on one line.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/walgo ./cmd/walgo

FROM debian:bookworm-slim
# postgresql-client-15 is bookworm's own; add a server package (postgresql-15)
# for restore drills. ca-certificates for S3 over TLS, tzdata for schedule's
# time zones.
ARG PG_PACKAGES="postgresql-client-15"
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata ${PG_PACKAGES} \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --create-home --home-dir /var/lib/walgo walgo
COPY --from=build /out/walgo /usr/local/bin/walgo
USER walgo
WORKDIR /var/lib/walgo
ENTRYPOINT ["walgo"]
CMD ["--help"]
