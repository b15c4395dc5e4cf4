FROM busybox
ENV NAME=world
COPY <<EOF /greeting
hello $NAME
EOF
RUN <<EOT
echo one
echo two
EOT
RUN <<EOT
#!/bin/sh -e
echo "from a script"
EOT
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/app.tar.gz /opt/
