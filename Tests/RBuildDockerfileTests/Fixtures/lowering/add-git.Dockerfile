FROM busybox
ADD https://example.com/o/r.git#main:sub /src/
ADD --keep-git-dir=true git@example.com:o/r.git#v1 /kept/
ADD --checksum=0123abcd ssh://git@example.com/o/r.git?tag=v2 /sum/
ADD https://example.com/o/r.git#main:sub /again/
ADD --chown=1:2 --chmod=0640 git://example.com/r?branch=dev&mtime=commit https://example.com/file.tar.gz /mixed/
ADD github.com/o/r /a-context-path
