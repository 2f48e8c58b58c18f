# virt-sandbox: build, test, demo, bench, lint.
SHELL := /bin/bash
GO        ?= go
# Go as this machine kind installs it, also when PATH does not name it.
export PATH := /usr/local/go/bin:$(PATH)
BIN       := bin
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
SETUP     := tests/setup-host.sh

# make install: PREFIX and DESTDIR as usual.
PREFIX    ?= /usr/local
COMMANDS  := virt-sandbox virt-sandbox-service virt-sandbox-image

.PHONY: all build test unit integration demo bench lint setup clean install

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(BIN)/virt-sandbox-init ./init
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

setup:
	$(SETUP)

# Unit tests and the integration tests in tests/, which drive the real
# libvirtd that setup starts.
test: setup build lint
	$(GO) test -count=1 -timeout 80m ./...

# The main job: one real sandbox on the default that needs least (LXC).
demo: setup build
	$(BIN)/virt-sandbox -c lxc:/// -- /bin/sh -c 'echo "hello from $$(hostname) as $$(id -un), root is read-only:"; touch /usr/x; exit 7'; echo "exit status $$?"

bench: setup build
	tests/bench.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The binaries, the init beside them in libexec, and the manual pages and
# completions each command prints from its own definitions (as --help).
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/libexec/virt-sandbox \
		$(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions
	install -m 0755 $(BIN)/virt-sandbox-init $(BIN)/virt-sandbox-virtiofsd $(DESTDIR)$(PREFIX)/libexec/virt-sandbox/
	for c in $(COMMANDS); do \
		install -m 0755 $(BIN)/$$c $(DESTDIR)$(PREFIX)/bin/ && \
		$(BIN)/$$c --man-page >$(DESTDIR)$(PREFIX)/share/man/man1/$$c.1 && \
		$(BIN)/$$c --completion bash >$(DESTDIR)$(PREFIX)/share/bash-completion/completions/$$c && \
		$(BIN)/$$c --completion zsh >$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_$$c || exit 1; \
	done

clean:
	rm -rf $(BIN)
