-- wrk script: GET a tenant and its runs in turn, as an operator's dashboard or script would,
-- paced to about 50 requests a second per connection (wrk itself has no rate option).
local key = os.getenv("ADSYNC_ADMIN_KEY")
local tenant = os.getenv("BENCH_TENANT")
wrk.headers["Authorization"] = "Bearer " .. key
local paths = { "/api/v1/tenants/" .. tenant, "/api/v1/tenants/" .. tenant .. "/runs?limit=5" }
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
delay = function()
  return 20
end
