module github.com/mamba2web/mamba2

go 1.26.0

require (
	github.com/ardanlabs/jinja v1.8.0
	github.com/cogentcore/webgpu v0.23.0
	github.com/dlclark/regexp2/v2 v2.13.0
	github.com/syumai/workers v0.33.0
)
